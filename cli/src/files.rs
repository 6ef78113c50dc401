//! `cairn files ls|add|get|rm|versions|restore`: the `default` folder through the REST API,
//! one file at a time (for whole trees, `cairn sync` and `cairn backup` use QUIC).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cairn_client::config::Config;
use cairn_client::rest::Session;
use cairn_protocol::api::FileInfo;
use serde_json::json;

use crate::args::FilesCommand;
use crate::output::{Report, fail, human_bytes};
use crate::progress::Progress;

/// The logged-in session of the config dir.
pub(crate) fn session(dir: &Path) -> anyhow::Result<(Config, Session)> {
    let config = Config::load(dir)?;
    let session = Session::new(dir, &config)?;
    Ok((config, session))
}

/// Runs one `files` subcommand.
pub(crate) async fn run(
    command: &FilesCommand,
    dir: &Path,
    quiet: bool,
    json: bool,
) -> anyhow::Result<Report> {
    let (_, session) = session(dir)?;
    match command {
        FilesCommand::Ls { path } => ls(&session, path.as_deref()).await,
        FilesCommand::Add { local, remote } => add(&session, local, remote.as_deref()).await,
        FilesCommand::Get {
            remote,
            local,
            force,
            version,
        } => {
            get(
                &session,
                remote,
                local.as_deref(),
                *force,
                *version,
                (quiet, json),
            )
            .await
        }
        FilesCommand::Rm { remote } => rm(&session, remote).await,
        FilesCommand::Versions { remote } => versions(&session, remote).await,
        FilesCommand::Restore { remote, version } => restore(&session, remote, *version).await,
    }
}

/// A remote path as the server writes it: no leading or trailing `/`.
fn clean(remote: &str) -> &str {
    remote.trim_matches('/')
}

fn not_found(remote: &str) -> anyhow::Error {
    fail(
        "not_found",
        format!("no file '{remote}' in your folder; see `cairn files ls`"),
    )
}

/// The live file at `remote`.
async fn live(session: &Session, remote: &str) -> anyhow::Result<FileInfo> {
    match session.file_at(clean(remote)).await? {
        Some(file) if !file.deleted => Ok(file),
        _ => Err(not_found(remote)),
    }
}

async fn ls(session: &Session, path: Option<&str>) -> anyhow::Result<Report> {
    let prefix = path.map(clean).filter(|p| !p.is_empty());
    let files = session.list_files(prefix).await?;
    if let (Some(prefix), true) = (prefix, files.is_empty()) {
        return Err(not_found(prefix));
    }
    let mut human = String::new();
    for file in &files {
        human.push_str(&format!(
            "{:>10}  {}  v{:<4} {}\n",
            human_bytes(file.size),
            &file.modified_at[..file.modified_at.len().min(19)].replace('T', " "),
            file.version,
            file.path
        ));
    }
    let total: u64 = files.iter().map(|f| f.size).sum();
    human.push_str(&format!("{} files, {}", files.len(), human_bytes(total)));
    Report::new(human, &json!({ "files": files }))
}

async fn add(session: &Session, local: &Path, remote: Option<&str>) -> anyhow::Result<Report> {
    let meta =
        std::fs::metadata(local).with_context(|| format!("cannot read '{}'", local.display()))?;
    if meta.is_dir() {
        return Err(fail(
            "is_a_directory",
            format!(
                "'{}' is a directory; use `cairn backup DIR` or `cairn sync start --folder DIR` for trees",
                local.display()
            ),
        ));
    }
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            fail(
                "invalid_path",
                format!("'{}' has no file name", local.display()),
            )
        })?;
    let target = match remote {
        None => name,
        Some(r) if clean(r).is_empty() => name,
        Some(r) if r.ends_with('/') => format!("{}/{name}", clean(r)),
        Some(r) => clean(r).to_owned(),
    };
    let file = session.upload(local, &target).await?;
    Report::new(
        format!(
            "uploaded '{}' as '{}' (version {}, {})",
            local.display(),
            file.path,
            file.version,
            human_bytes(file.size)
        ),
        &file,
    )
}

async fn get(
    session: &Session,
    remote: &str,
    local: Option<&Path>,
    force: bool,
    version: Option<u64>,
    (quiet, json): (bool, bool),
) -> anyhow::Result<Report> {
    let file = match version {
        // An old version of a deleted file can still be fetched.
        Some(_) => session
            .file_at(clean(remote))
            .await?
            .ok_or_else(|| not_found(remote))?,
        None => live(session, remote).await?,
    };
    let name = file
        .path
        .rsplit('/')
        .next()
        .unwrap_or(&file.path)
        .to_owned();
    let dest = match local {
        None => PathBuf::from(&name),
        Some(p) if p.is_dir() => p.join(&name),
        Some(p) => p.to_path_buf(),
    };
    if dest.exists() && !force {
        return Err(fail(
            "exists",
            format!("'{}' exists; pass --force to replace it", dest.display()),
        ));
    }
    let mut progress = Progress::new("downloading", quiet, json);
    let size = session
        .download(file.id, version, &dest, &mut |done, total| {
            progress.set(done, total);
        })
        .await;
    progress.finish();
    let size = size?;
    Report::new(
        format!(
            "downloaded '{}'{} to '{}' ({})",
            file.path,
            version.map(|v| format!(" version {v}")).unwrap_or_default(),
            dest.display(),
            human_bytes(size)
        ),
        &json!({
            "path": file.path,
            "local": dest.display().to_string(),
            "size": size,
            "version": version.unwrap_or(file.version),
        }),
    )
}

async fn rm(session: &Session, remote: &str) -> anyhow::Result<Report> {
    let file = live(session, remote).await?;
    session.delete_file(file.id).await?;
    Report::new(
        format!(
            "deleted '{}' (restore it with `cairn files restore {} --version {}`)",
            file.path, file.path, file.version
        ),
        &json!({ "deleted": file.path, "id": file.id, "last_version": file.version }),
    )
}

async fn versions(session: &Session, remote: &str) -> anyhow::Result<Report> {
    let file = session
        .file_at(clean(remote))
        .await?
        .ok_or_else(|| not_found(remote))?;
    let list = session.versions(file.id).await?;
    let mut human = format!("{}:\n", file.path);
    for v in &list.versions {
        human.push_str(&format!(
            "  v{:<4} {}  {:>10}  {}{}\n",
            v.version,
            &v.created_at[..v.created_at.len().min(19)].replace('T', " "),
            if v.deleted {
                "-".to_owned()
            } else {
                human_bytes(v.size)
            },
            v.device,
            if v.deleted { "  (deleted)" } else { "" }
        ));
    }
    Report::new(
        human.trim_end().to_owned(),
        &json!({ "path": file.path, "id": file.id, "versions": list.versions }),
    )
}

async fn restore(session: &Session, remote: &str, version: u64) -> anyhow::Result<Report> {
    let file = session
        .file_at(clean(remote))
        .await?
        .ok_or_else(|| not_found(remote))?;
    let list = session.versions(file.id).await?;
    let wanted = list
        .versions
        .iter()
        .find(|v| v.version == version)
        .ok_or_else(|| {
            fail(
                "not_found",
                format!(
                    "'{}' has no version {version}; see `cairn files versions {}`",
                    file.path, file.path
                ),
            )
        })?;
    if wanted.deleted {
        return Err(fail(
            "deleted_version",
            format!(
                "version {version} of '{}' is its deletion; pick a version with content",
                file.path
            ),
        ));
    }
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let staged = temp.path().join("content");
    session
        .download(file.id, Some(version), &staged, &mut |_, _| {})
        .await?;
    let restored = session.upload(&staged, &file.path).await?;
    Report::new(
        format!(
            "restored '{}' to version {version}: it is now version {}",
            file.path, restored.version
        ),
        &json!({ "path": restored.path, "from_version": version, "file": restored }),
    )
}
