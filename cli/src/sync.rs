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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use cairn_client::config::{Config, QuicPin, config_dir, state_dir_for};
use cairn_client::engine::{Engine, EngineOptions, Event, PassSummary, SyncError};
use cairn_client::remote::{Remote, RemoteError, Trust};
use cairn_client::rest::{RestClient, Session, normalize_server_url, quic_addr_for};
use cairn_client::watch::FolderWatcher;
use cairn_protocol::wire::ErrorCode;
use clap::Args;
use serde::Serialize;
use tokio::sync::Notify;

use crate::control::{self, Control, DaemonStatus, Progress, Shared, lock};

use crate::output::{fail, human_bytes, warn};

/// Passes `--once` tries before it gives up on agreeing with the server.
const ONCE_PASSES_MAX: u32 = 5;

/// Seconds between safety-net scans while the folder is watched.
const SAFETY_SCAN_SECS: u64 = 600;

/// Seconds between scans when the folder cannot be watched.
const FALLBACK_SCAN_SECS: u64 = 5;

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
pub(crate) fn start(args: &SyncStartArgs, json: bool) -> anyhow::Result<()> {
    let dir = config_dir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args, json, &dir))
}

async fn run(args: &SyncStartArgs, json: bool, dir: &Path) -> anyhow::Result<()> {
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
    let server = session.rest().server().to_owned();
    let pin = match config.quic.clone() {
        Some(pin) => pin,
        None => pin_now(dir, session.rest()).await?,
    };
    let folder = args
        .folder
        .canonicalize()
        .with_context(|| format!("the folder '{}' cannot be used", args.folder.display()))?;
    let state_dir = state_dir_for(&folder)?;
    let status_dir = state_dir.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut engine = Engine::open(
        EngineOptions {
            root: folder.clone(),
            state_dir,
            device: config.device.clone(),
            allow_mass_delete: args.allow_mass_delete,
        },
        tx,
    )?;
    let shared: Shared = Arc::new(Mutex::new(DaemonStatus {
        pid: std::process::id(),
        folder: folder.display().to_string(),
        server: server.clone(),
        state: "starting".into(),
        phase: None,
        progress: None,
        seq: 0,
        in_sync: false,
        last_pass_unix: 0,
        last_error: None,
        conflicts: 0,
        watching: false,
    }));
    let printer = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                track(&shared, &event);
                print_event(&event, json);
            }
        })
    };
    if args.remote != "default" {
        session.ensure_folder(&args.remote).await?;
    }
    let mut remote = connect(&session, &pin, &config.device, &args.remote).await?;
    let result = if args.once {
        once(
            &mut engine,
            &mut remote,
            &session,
            &pin,
            &config.device,
            &args.remote,
            json,
        )
        .await
    } else {
        let stop = Arc::new(Notify::new());
        let control = match Control::start(&status_dir, Arc::clone(&shared), Arc::clone(&stop)) {
            Ok(control) => Some(control),
            Err(err) => {
                warn(&format!(
                    "no control socket in {} ({err}); `cairn sync status|stop` will not see this sync",
                    status_dir.display()
                ));
                None
            }
        };
        let outcome = daemon(
            &mut engine,
            &mut remote,
            &session,
            (&pin, &config.device, &args.remote),
            args.interval,
            json,
            &shared,
            &stop,
        )
        .await;
        drop(control);
        outcome
    };
    remote.close();
    drop(engine);
    let _ = printer.await;
    result
}

/// Trust on first use: fetches and saves the server's certificate fingerprint.
pub(crate) async fn pin_now(dir: &Path, rest: &RestClient) -> anyhow::Result<QuicPin> {
    let info = rest.sync_info().await?;
    let pin = QuicPin {
        addr: quic_addr_for(rest.server(), &info),
        fingerprint: info.fingerprint,
    };
    warn(&format!(
        "pinning the server's certificate {} (first use)",
        pin.fingerprint
    ));
    let saved = pin.clone();
    Config::update(dir, move |c| c.quic = Some(saved))?;
    Ok(pin)
}

pub(crate) async fn connect(
    session: &Session,
    pin: &QuicPin,
    device: &str,
    folder: &str,
) -> anyhow::Result<Remote> {
    let addr = tokio::net::lookup_host(&pin.addr)
        .await
        .with_context(|| format!("resolving the sync endpoint {}", pin.addr))?
        .next()
        .ok_or_else(|| fail("connect", format!("{} resolves to no address", pin.addr)))?;
    let host = pin.addr.rsplit_once(':').map_or("localhost", |(h, _)| h);
    let token = session.access_token().await?;
    let trust = Trust::Pinned(pin.fingerprint.clone());
    Ok(Remote::connect(addr, host, &trust, &token.0, device, folder).await?)
}

/// One pass, renewing the token or the connection once if they lapsed.
async fn pass(
    engine: &mut Engine,
    remote: &mut Remote,
    session: &Session,
    (pin, device, folder): (&QuicPin, &str, &str),
) -> anyhow::Result<PassSummary> {
    match engine.pass(remote).await {
        Err(SyncError::Remote(err)) if err.code() == Some(ErrorCode::Unauthorized) => {
            session.invalidate().await;
            let token = session.access_token().await?;
            remote.hello(&token.0, device).await?;
        }
        Err(SyncError::Remote(RemoteError::Stream(_) | RemoteError::Connect { .. })) => {
            *remote = connect(session, pin, device, folder).await?;
        }
        other => return Ok(other?),
    }
    Ok(engine.pass(remote).await?)
}

async fn once(
    engine: &mut Engine,
    remote: &mut Remote,
    session: &Session,
    pin: &QuicPin,
    device: &str,
    folder: &str,
    json: bool,
) -> anyhow::Result<()> {
    let mut last = PassSummary::default();
    for _ in 0..ONCE_PASSES_MAX {
        let this = pass(engine, remote, session, (pin, device, folder)).await?;
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
            print_summary(&last, json);
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
    print_summary(&last, json);
    Err(fail(
        "not_in_sync",
        format!(
            "the folder and the server still differ after {ONCE_PASSES_MAX} passes ({} paths could not be synced; see above)",
            last.problems
        ),
    ))
}

#[allow(clippy::too_many_arguments)]
async fn daemon(
    engine: &mut Engine,
    remote: &mut Remote,
    session: &Session,
    target: (&QuicPin, &str, &str),
    interval: Option<u64>,
    json: bool,
    shared: &Shared,
    requested: &Notify,
) -> anyhow::Result<()> {
    // Registered before the first pass, so a stop during it is not the default (fatal) action.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut stop = Box::pin(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            () = requested.notified() => {}
        }
    });
    let folder = PathBuf::from(&lock(shared).folder);
    let mut watcher = match FolderWatcher::start(&folder) {
        Ok(watcher) => Some(watcher),
        Err(reason) => {
            warn(&format!(
                "cannot watch {} for changes ({reason}); scanning every {} s instead",
                folder.display(),
                interval.unwrap_or(FALLBACK_SCAN_SECS)
            ));
            None
        }
    };
    lock(shared).watching = watcher.is_some();
    let interval = Duration::from_secs(
        interval
            .unwrap_or(if watcher.is_some() {
                SAFETY_SCAN_SECS
            } else {
                FALLBACK_SCAN_SECS
            })
            .max(1),
    );
    let mut last_seq = None;
    loop {
        lock(shared).state = "syncing".into();
        let outcome = pass(engine, remote, session, target).await;
        let mut failed = None;
        {
            let mut status = lock(shared);
            status.phase = None;
            status.progress = None;
            status.last_pass_unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            match &outcome {
                Ok(summary) => {
                    last_seq = Some(summary.seq);
                    status.state = if summary.in_sync { "idle" } else { "syncing" }.into();
                    status.seq = summary.seq;
                    status.in_sync = summary.in_sync;
                    status.last_error = None;
                }
                Err(err) => {
                    let message = crate::output::one_line(&format!("{err:#}"));
                    status.state = "error".into();
                    status.last_error = Some(message.clone());
                    failed = Some(message);
                }
            }
        }
        match outcome {
            Ok(summary) => {
                let worked = summary.uploaded
                    + summary.downloaded
                    + summary.deleted_local
                    + summary.deleted_remote
                    + summary.conflicts
                    > 0;
                if worked {
                    print_summary(&summary, json);
                }
                // A pass that moved something ends before it can see the result agree: the next
                // pass confirms it (or finds what changed meanwhile) at once, not at the next
                // trigger. A pass that could not finish some paths waits for one instead.
                if worked && !summary.in_sync {
                    continue;
                }
            }
            Err(_) => {
                warn(&format!(
                    "sync pass failed: {}; retrying",
                    failed.unwrap_or_default()
                ));
                if let Ok(new) = connect(session, target.0, target.1, target.2).await {
                    *remote = new;
                }
            }
        }
        // Wait for a local change, a moved head (one round trip a second), the safety-net
        // interval, or a stop.
        let deadline = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                () = &mut stop => return Ok(()),
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                changed = local_change(&mut watcher) => {
                    if changed {
                        break;
                    }
                    warn("the folder watcher stopped; scanning on the interval only");
                    watcher = None;
                }
            }
            match remote.head().await {
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

#[derive(Serialize)]
struct SummaryJson {
    kind: &'static str,
    seq: u64,
    in_sync: bool,
    uploaded: u64,
    downloaded: u64,
    deleted_local: u64,
    deleted_remote: u64,
    conflicts: u64,
    problems: u64,
    blocks_up: u64,
    bytes_up: u64,
    blocks_down: u64,
    bytes_down: u64,
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn print_summary(s: &PassSummary, json: bool) {
    if json {
        let body = SummaryJson {
            kind: "summary",
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
        };
        if let Ok(text) = serde_json::to_string(&body) {
            println!("{text}");
        }
    } else {
        eprintln!(
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
        );
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn print_event(event: &Event, json: bool) {
    let value = match event {
        Event::Phase(_) | Event::Progress { .. } => return,
        Event::File { path, what } => {
            serde_json::json!({"kind": "file", "path": path, "what": what})
        }
        Event::Conflict { path, copy, reason } => {
            serde_json::json!({"kind": "conflict", "path": path, "copy": copy, "reason": reason})
        }
        Event::Collision { paths } => serde_json::json!({"kind": "collision", "paths": paths}),
        Event::Problem { path, message } => {
            serde_json::json!({"kind": "problem", "path": path, "message": message})
        }
    };
    if json {
        println!("{value}");
        return;
    }
    match event {
        Event::File { path, what } => eprintln!("{what}: {path}"),
        Event::Conflict { path, copy, .. } => match copy {
            Some(copy) => eprintln!(
                "conflict: {path} was changed here and on another device; your version is kept as '{copy}'"
            ),
            None => eprintln!(
                "conflict: {path} was edited on one side and deleted on the other; the edit was kept"
            ),
        },
        Event::Collision { paths } => eprintln!(
            "warning: these names differ only in case or Unicode form and would collide on some systems: {}",
            paths.join(", ")
        ),
        Event::Problem { path, message } => eprintln!("not synced: {path}: {message}"),
        Event::Phase(_) | Event::Progress { .. } => {}
    }
}

/// The statuses of the daemons of this config dir, one per synced folder, as each answers on
/// its control socket.
async fn running(dir: &Path) -> Vec<(PathBuf, DaemonStatus)> {
    let mut found = Vec::new();
    for state_dir in control::sockets(dir) {
        if let Some(status) = control::ask(&state_dir, "status")
            .await
            .and_then(|v| serde_json::from_value::<DaemonStatus>(v).ok())
        {
            found.push((state_dir, status));
        }
    }
    found.sort_by(|a, b| a.1.folder.cmp(&b.1.folder));
    found
}

fn small_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Runs `cairn sync status`: every folder this config dir's daemons sync.
///
/// # Errors
/// No config dir.
#[allow(clippy::print_stdout)]
pub(crate) fn status(json: bool) -> anyhow::Result<()> {
    let dir = config_dir()?;
    let daemons = small_runtime()?.block_on(running(&dir));
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
    let daemons = runtime.block_on(running(&dir));
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
