//! `cairn backup`, `cairn snapshots` and `cairn restore`: a server folder used as a backup
//! repository. Each backup is one commit of the folder (a snapshot); the folder's history is the
//! list of snapshots; a restore materialises one of them. Transfers use the QUIC engine, so a
//! second backup sends only blocks the server lacks and rehashes only files whose size, mtime
//! or ctime changed.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cairn_client::config::{Config, QuicPin};
use cairn_client::engine::{Engine, EngineOptions, Event, PassSummary, SyncError};
use cairn_client::remote::Remote;
use cairn_client::rest::Session;
use cairn_protocol::api::valid_folder_name;
use cairn_protocol::wire::ErrorCode;
use cairn_store::NodeId;
use serde_json::json;

use crate::args::{BackupArgs, RestoreArgs, SnapshotsArgs};
use crate::files::session;
use crate::output::{Report, fail, human_bytes, warn};
use crate::progress::Progress;
use crate::sync::{connect, pin_now};

/// The folder a backup command uses: `--remote`, else `backup-<device>` (the device name is the
/// hostname unless changed with `cairn config set device`).
fn folder_name(remote: Option<&str>, config: &Config) -> anyhow::Result<String> {
    let name = remote.map_or_else(|| format!("backup-{}", config.device), str::to_owned);
    if !valid_folder_name(&name) {
        return Err(fail(
            "invalid_folder_name",
            format!(
                "'{name}' cannot be a folder name: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
            ),
        ));
    }
    Ok(name)
}

/// Prints events as a command works: a progress bar, per-file lines with `-v`, problems always.
fn spawn_printer(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    quiet: bool,
    verbose: bool,
    json: bool,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut progress = Progress::new("scanning", quiet, json);
        let mut problems = 0u64;
        while let Some(event) = rx.recv().await {
            match event {
                Event::Phase(phase) => progress.phase(phase),
                Event::Progress { done, total, .. } => progress.set(done, total),
                Event::File { path, what } if verbose && !json => {
                    progress.finish();
                    warn_plain(&format!("{what}: {path}"));
                }
                Event::Problem { path, message } => {
                    problems += 1;
                    warn(&format!("'{path}' was skipped: {message}"));
                }
                Event::Warning { message } => warn(&message),
                _ => {}
            }
        }
        progress.finish();
        problems
    })
}

#[allow(clippy::print_stderr)]
fn warn_plain(line: &str) {
    eprintln!("{line}");
}

async fn pin_of(dir: &Path, config: &Config, session: &Session) -> anyhow::Result<QuicPin> {
    match config.quic.clone() {
        Some(pin) => Ok(pin),
        None => pin_now(dir, session.rest()).await,
    }
}

/// Where a backup of `source` to `folder` on the session's server keeps its scan cache and
/// node cache, so the next backup rehashes only changed files.
fn backup_state_dir(
    dir: &Path,
    session: &Session,
    config: &Config,
    folder: &str,
    source: &Path,
) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut hasher = blake3::Hasher::new();
    hasher.update(session.rest().server().as_bytes());
    hasher.update(b"\0");
    hasher.update(config.username.as_deref().unwrap_or_default().as_bytes());
    hasher.update(b"\0");
    hasher.update(folder.as_bytes());
    hasher.update(b"\0");
    hasher.update(source.as_os_str().as_bytes());
    let mut name = hasher.finalize().to_hex().to_string();
    name.truncate(16);
    dir.join("backups").join(name)
}

/// Runs `job` with a connection, reconnecting or re-authenticating once if either lapsed.
async fn with_remote<T>(
    dir: &Path,
    config: &Config,
    session: &Session,
    folder: &str,
    engine: &mut Engine,
    job: impl AsyncFnMut(&mut Engine, &Remote) -> Result<T, SyncError>,
) -> anyhow::Result<T> {
    let mut job = job;
    let pin = pin_of(dir, config, session).await?;
    let remote = connect(session, &pin, &config.device, folder).await?;
    let result = match job(engine, &remote).await {
        Err(SyncError::Remote(err)) if err.code() == Some(ErrorCode::Unauthorized) => {
            session.invalidate().await;
            let token = session.access_token().await?;
            remote.hello(&token.0, &config.device).await?;
            job(engine, &remote).await
        }
        other => other,
    };
    remote.close();
    Ok(result?)
}

/// `cairn backup DIR [--remote NAME]`.
pub(crate) async fn backup(
    args: &BackupArgs,
    dir: &Path,
    (quiet, verbose, json): (bool, bool, bool),
) -> anyhow::Result<Report> {
    let (config, session) = session(dir)?;
    let folder = folder_name(args.remote.as_deref(), &config)?;
    let source = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot back up '{}'", args.dir.display()))?;
    if !source.is_dir() {
        return Err(fail(
            "not_a_directory",
            format!(
                "'{}' is not a directory; use `cairn files add` for one file",
                args.dir.display()
            ),
        ));
    }
    session.ensure_folder(&folder).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut engine = Engine::open(
        EngineOptions {
            root: source.clone(),
            state_dir: backup_state_dir(dir, &session, &config, &folder, &source),
            device: config.device.clone(),
            allow_mass_delete: true,
        },
        tx,
    )?;
    let printer = spawn_printer(rx, quiet, verbose, json);
    let result = with_remote(
        dir,
        &config,
        &session,
        &folder,
        &mut engine,
        async |e, r| e.backup(r).await,
    )
    .await;
    drop(engine);
    let problems = printer.await.unwrap_or(0);
    let summary = result?;
    let report = backup_report(&summary, &folder, &source);
    if problems > 0 {
        // The snapshot exists but lacks these files: not a success a script should miss.
        return Err(fail(
            "incomplete",
            format!(
                "snapshot {} of '{folder}' was saved without {problems} file(s) that could not be read (see above)",
                summary.seq
            ),
        ));
    }
    report
}

fn backup_report(summary: &PassSummary, folder: &str, source: &Path) -> anyhow::Result<Report> {
    let changed = summary.uploaded + summary.deleted_remote > 0;
    let human = if changed {
        format!(
            "snapshot {} of '{folder}' saved: {} files added or changed, {} removed, {} sent",
            summary.seq,
            summary.uploaded,
            summary.deleted_remote,
            human_bytes(summary.bytes_up)
        )
    } else {
        format!(
            "'{}' is unchanged since snapshot {} of '{folder}'; nothing was sent",
            source.display(),
            summary.seq
        )
    };
    Report::new(
        human,
        &json!({
            "folder": folder,
            "source": source.display().to_string(),
            "seq": summary.seq,
            "new_snapshot": changed,
            "files_changed": summary.uploaded,
            "files_removed": summary.deleted_remote,
            "blocks_sent": summary.blocks_up,
            "bytes_sent": summary.bytes_up,
        }),
    )
}

/// `cairn snapshots [--remote NAME]`.
pub(crate) async fn snapshots(args: &SnapshotsArgs, dir: &Path) -> anyhow::Result<Report> {
    let (config, session) = session(dir)?;
    let folder = folder_name(args.remote.as_deref(), &config)?;
    let list = session.commits(&folder).await.map_err(|err| match &err {
        cairn_client::rest::RestError::Refused { status: 404, .. } => fail(
            "not_found",
            format!(
                "you have no folder '{folder}'; `cairn backup DIR --remote {folder}` creates it"
            ),
        ),
        _ => err.into(),
    })?;
    let mut human = format!(
        "{:>6}  {:<19}  {:<20} {:>8} {:>10}\n",
        "SEQ", "TIME (UTC)", "DEVICE", "FILES", "SIZE"
    );
    for c in &list.commits {
        human.push_str(&format!(
            "{:>6}  {:<19}  {:<20} {:>8} {:>10}\n",
            c.seq,
            c.created_at[..c.created_at.len().min(19)].replace('T', " "),
            c.device,
            c.files,
            human_bytes(c.bytes)
        ));
    }
    human.push_str(&format!("{} snapshots of '{folder}'", list.commits.len()));
    Report::new(
        human,
        &json!({ "folder": folder, "snapshots": list.commits }),
    )
}

/// `cairn restore DEST [--remote NAME] [--at SEQ] [--force]`.
pub(crate) async fn restore(
    args: &RestoreArgs,
    dir: &Path,
    (quiet, verbose, json): (bool, bool, bool),
) -> anyhow::Result<Report> {
    let (config, session) = session(dir)?;
    let folder = folder_name(args.remote.as_deref(), &config)?;
    let list = session.commits(&folder).await.map_err(|err| match &err {
        cairn_client::rest::RestError::Refused { status: 404, .. } => {
            fail("not_found", format!("you have no folder '{folder}'"))
        }
        _ => err.into(),
    })?;
    let commit = match args.at {
        Some(seq) => list.commits.iter().find(|c| c.seq == seq).ok_or_else(|| {
            fail(
                "not_found",
                format!(
                    "'{folder}' has no snapshot {seq}; see `cairn snapshots --remote {folder}`"
                ),
            )
        })?,
        None => list
            .commits
            .first()
            .ok_or_else(|| fail("not_found", format!("'{folder}' has no snapshots yet")))?,
    };
    let root: NodeId = commit
        .root
        .parse()
        .map_err(|_| fail("unexpected_answer", "the server sent an invalid root id"))?;
    std::fs::create_dir_all(&args.dest)
        .with_context(|| format!("cannot create '{}'", args.dest.display()))?;
    let dest = args.dest.canonicalize()?;
    let non_empty = std::fs::read_dir(&dest)
        .with_context(|| format!("cannot read '{}'", dest.display()))?
        .next()
        .is_some();
    if non_empty && !args.force {
        return Err(fail(
            "not_empty",
            format!(
                "'{}' is not empty; restore into an empty directory, or pass --force to write over the files the snapshot has",
                dest.display()
            ),
        ));
    }
    // The node cache of a restore is temporary: in the config dir, not /tmp, which may be small.
    std::fs::create_dir_all(dir)?;
    let scratch = tempfile::Builder::new()
        .prefix(".restore-")
        .tempdir_in(dir)
        .context("creating a scratch directory in the config dir")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut engine = Engine::open(
        EngineOptions {
            root: dest.clone(),
            state_dir: scratch.path().to_path_buf(),
            device: config.device.clone(),
            allow_mass_delete: false,
        },
        tx,
    )?;
    let printer = spawn_printer(rx, quiet, verbose, json);
    let seq = commit.seq;
    let result = with_remote(
        dir,
        &config,
        &session,
        &folder,
        &mut engine,
        async move |e, r| e.restore(r, seq, root).await,
    )
    .await;
    drop(engine);
    let problems = printer.await.unwrap_or(0);
    let summary = result?;
    if summary.problems + problems > 0 {
        return Err(fail(
            "incomplete",
            format!(
                "{} path(s) of snapshot {seq} could not be written into '{}' (see above)",
                summary.problems + problems,
                dest.display()
            ),
        ));
    }
    Report::new(
        format!(
            "restored snapshot {seq} of '{folder}' into '{}': {} files written, {} received",
            dest.display(),
            summary.downloaded,
            human_bytes(summary.bytes_down)
        ),
        &json!({
            "folder": folder,
            "seq": seq,
            "dest": dest.display().to_string(),
            "files_written": summary.downloaded,
            "bytes_received": summary.bytes_down,
        }),
    )
}
