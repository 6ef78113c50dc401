//! The conflicts a synced folder recorded, kept in `conflicts.json` in its state dir until the
//! user resolves them (`cairn conflicts --resolve`) or deletes the conflict copy.
//!
//! A conflict is already safe when it is recorded: the winner is at the path, the loser in the
//! copy (or, for edit-versus-delete, the edit was kept), and both are in the server's history.
//! Resolving only chooses which content stays at the path.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::write_atomic;

const FILE: &str = "conflicts.json";

/// One recorded conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// The path both sides changed, relative to the folder.
    pub path: String,
    /// Where this device's losing content was kept, relative to the folder (none for
    /// edit-versus-delete, where the edit won).
    pub copy: Option<String>,
    /// With conflict copies off: the file node (hex) of this device's losing content, which was
    /// kept in the server's version history instead of a copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
    /// `both_edited`, `edited_vs_deleted` or `type_clash`.
    pub reason: String,
    /// Which content is at `path`: `remote` (another device's) or `local`.
    pub winner: String,
    /// When it was recorded, Unix seconds.
    pub at: u64,
    /// The folder's revision after the pass that found it.
    pub seq: u64,
}

/// The conflicts of one synced folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderConflicts {
    /// The synced folder (absolute).
    pub folder: PathBuf,
    /// Unresolved conflicts, oldest first.
    pub conflicts: Vec<ConflictRecord>,
}

/// Reads the conflicts of the folder whose state is in `state_dir` (none when no file).
///
/// # Errors
/// An unreadable or corrupt file.
pub fn load(state_dir: &Path) -> Result<Option<FolderConflicts>, String> {
    let path = state_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("'{}' is corrupt: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading '{}': {e}", path.display())),
    }
}

/// Saves the list (removing the file when it is empty).
///
/// # Errors
/// The file cannot be written.
pub fn save(state_dir: &Path, conflicts: &FolderConflicts) -> Result<(), String> {
    let path = state_dir.join(FILE);
    if conflicts.conflicts.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("removing '{}': {e}", path.display()))
            }
            _ => Ok(()),
        };
    }
    let bytes = serde_json::to_vec_pretty(conflicts).map_err(|e| e.to_string())?;
    write_atomic(&path, &bytes)
}

/// Adds records for `folder` (a record for a path already listed replaces the old one).
///
/// # Errors
/// As [`load`] and [`save`].
pub fn add(state_dir: &Path, folder: &Path, records: Vec<ConflictRecord>) -> Result<(), String> {
    if records.is_empty() {
        return Ok(());
    }
    let mut all = load(state_dir)?.unwrap_or_default();
    all.folder = folder.to_path_buf();
    for record in records {
        all.conflicts.retain(|c| c.path != record.path);
        all.conflicts.push(record);
    }
    save(state_dir, &all)
}

/// Drops records whose conflict copy no longer exists in the folder (the user dealt with it).
/// Returns whether anything was dropped.
pub fn prune_handled(conflicts: &mut FolderConflicts) -> bool {
    let before = conflicts.conflicts.len();
    let folder = conflicts.folder.clone();
    conflicts.conflicts.retain(|c| {
        c.copy
            .as_ref()
            .is_none_or(|copy| std::fs::symlink_metadata(folder.join(copy)).is_ok())
    });
    conflicts.conflicts.len() != before
}

/// Which content a resolved conflict keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The content at the path (the commit the server accepted): the conflict copy is deleted.
    Remote,
    /// This device's content, in the conflict copy: it is moved back over the path.
    Local,
    /// Both: the copy stays as a file of its own; only the record goes.
    Both,
}

/// Resolves conflict `index` of `list` (whose state is in `state_dir`) by keeping `keep`, then
/// saves the list. Only local files change; the next sync pass carries the choice to the
/// server, where both contents stay in the version history. Returns what was kept: `remote`,
/// `local`, `both`, or `edit` for an edit-versus-delete conflict (the edit is already at the
/// path, whichever side is chosen).
///
/// # Errors
/// No such conflict, the copy cannot be deleted or moved, or the list cannot be saved.
pub fn resolve(
    state_dir: &Path,
    list: &mut FolderConflicts,
    index: usize,
    keep: Keep,
) -> Result<&'static str, String> {
    let record = list
        .conflicts
        .get(index)
        .cloned()
        .ok_or_else(|| "no such conflict".to_owned())?;
    if record.kept.is_some() && keep != Keep::Remote {
        return Err(format!(
            "your version of '{}' is in the version history, not in a copy; it must be fetched \
             from the server (the app and `cairn conflicts --resolve` do that)",
            record.path
        ));
    }
    // Never through a parent another user swapped for a link (a shared folder).
    let inside = |path: &str| {
        cairn_protocol::path::RelPath::parse(path)
            .map_err(|e| format!("'{path}': {e}"))
            .and_then(|rel| crate::engine::confined(&list.folder, &rel))
    };
    let kept = match (keep, &record.copy) {
        (Keep::Remote, None) if record.kept.is_some() => "remote",
        (Keep::Both, _) => "both",
        (Keep::Remote, Some(copy)) => {
            let copy = inside(copy)?;
            std::fs::remove_file(&copy)
                .map_err(|e| format!("deleting '{}': {e}", copy.display()))?;
            "remote"
        }
        (Keep::Local, Some(copy)) => {
            let copy = inside(copy)?;
            let target = inside(&record.path)?;
            std::fs::rename(&copy, &target).map_err(|e| {
                format!(
                    "moving '{}' over '{}': {e}",
                    copy.display(),
                    target.display()
                )
            })?;
            "local"
        }
        (_, None) => "edit",
    };
    list.conflicts.remove(index);
    save(state_dir, list)?;
    Ok(kept)
}

/// [`resolve`] for any conflict, fetching from the server what only the version history
/// holds: when this device's version was kept there instead of in a copy, keeping it downloads
/// it over the path (`Keep::Local`) or to a conflict copy beside it (`Keep::Both`, named
/// like the copy the engine would have made, with `device`).
///
/// # Errors
/// As [`resolve`]; the server cannot be reached or no longer has the version (the REST API
/// shows the `default` folder only, so a version kept in another folder cannot be fetched).
pub async fn resolve_fetching(
    session: &crate::rest::Session,
    state_dir: &Path,
    list: &mut FolderConflicts,
    index: usize,
    keep: Keep,
    device: &str,
) -> Result<&'static str, String> {
    let record = list
        .conflicts
        .get(index)
        .cloned()
        .ok_or_else(|| "no such conflict".to_owned())?;
    let Some(hash) = record.kept.as_deref().filter(|_| keep != Keep::Remote) else {
        return resolve(state_dir, list, index, keep);
    };
    let missing = || {
        format!(
            "your version of '{}' is no longer in the server's history of the default folder",
            record.path
        )
    };
    let file = session
        .file_at(&record.path)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(missing)?;
    let version = session
        .versions(file.id)
        .await
        .map_err(|e| e.to_string())?
        .versions
        .into_iter()
        .find(|v| v.hash == hash && !v.deleted)
        .ok_or_else(missing)?;
    let rel = cairn_protocol::path::RelPath::parse(&record.path).map_err(|e| e.to_string())?;
    // Never written through a symlinked parent (out of the folder), like the engine's writes.
    let (dest, kept) = match keep {
        Keep::Local => (crate::engine::confined(&list.folder, &rel)?, "local"),
        _ => {
            let at = crate::time::utc_from_unix(i64::try_from(record.at).unwrap_or(0));
            let copy = (1..=1000)
                .map(|n| crate::plan::conflict_name(&rel, device, at, n))
                .find(|name| std::fs::symlink_metadata(list.folder.join(name.as_str())).is_err())
                .ok_or_else(|| format!("no free name for a copy of '{}'", record.path))?;
            (crate::engine::confined(&list.folder, &copy)?, "both")
        }
    };
    session
        .download(file.id, Some(version.version), &dest, &mut |_, _| {})
        .await
        .map_err(|e| e.to_string())?;
    list.conflicts.remove(index);
    save(state_dir, list)?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, copy: Option<&str>) -> ConflictRecord {
        ConflictRecord {
            path: path.into(),
            copy: copy.map(Into::into),
            kept: None,
            reason: "both_edited".into(),
            winner: "remote".into(),
            at: 1,
            seq: 2,
        }
    }

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, FolderConflicts) {
        let folder = tempfile::tempdir().expect("tempdir");
        let state = tempfile::tempdir().expect("tempdir");
        std::fs::write(folder.path().join("a.txt"), "theirs").expect("write");
        std::fs::write(folder.path().join("a (conflict).txt"), "mine").expect("write");
        std::fs::write(folder.path().join("b.txt"), "edit").expect("write");
        add(
            state.path(),
            folder.path(),
            vec![
                record("a.txt", Some("a (conflict).txt")),
                record("b.txt", None),
            ],
        )
        .expect("add");
        let list = load(state.path()).expect("load").expect("some");
        (folder, state, list)
    }

    #[test]
    fn keep_local_moves_the_copy_over_the_path() {
        let (folder, state, mut list) = setup();
        assert_eq!(
            resolve(state.path(), &mut list, 0, Keep::Local).expect("resolve"),
            "local"
        );
        assert_eq!(
            std::fs::read_to_string(folder.path().join("a.txt")).expect("read"),
            "mine"
        );
        assert!(!folder.path().join("a (conflict).txt").exists());
        let saved = load(state.path()).expect("load").expect("some");
        assert_eq!(saved.conflicts.len(), 1);
        assert_eq!(saved.conflicts[0].path, "b.txt");
    }

    #[test]
    fn keep_remote_deletes_the_copy_and_keep_both_keeps_it() {
        let (folder, state, mut list) = setup();
        let mut other = list.clone();
        assert_eq!(
            resolve(state.path(), &mut list, 0, Keep::Remote).expect("resolve"),
            "remote"
        );
        assert!(!folder.path().join("a (conflict).txt").exists());
        assert_eq!(
            std::fs::read_to_string(folder.path().join("a.txt")).expect("read"),
            "theirs"
        );
        std::fs::write(folder.path().join("a (conflict).txt"), "mine").expect("write");
        assert_eq!(
            resolve(state.path(), &mut other, 0, Keep::Both).expect("resolve"),
            "both"
        );
        assert!(folder.path().join("a (conflict).txt").exists());
        assert_eq!(
            resolve(state.path(), &mut other, 0, Keep::Remote).expect("resolve"),
            "edit"
        );
        assert!(load(state.path()).expect("load").is_none(), "all resolved");
        assert!(resolve(state.path(), &mut other, 0, Keep::Local).is_err());
    }

    #[test]
    fn nothing_is_moved_through_a_directory_swapped_for_a_link() {
        let folder = tempfile::tempdir().expect("tempdir");
        let state = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(folder.path().join("docs")).expect("mkdir");
        std::fs::write(folder.path().join("docs/a (conflict).txt"), "mine").expect("write");
        add(
            state.path(),
            folder.path(),
            vec![record("docs/a.txt", Some("docs/a (conflict).txt"))],
        )
        .expect("add");
        let mut list = load(state.path()).expect("load").expect("some");
        // Another user replaces `docs` with a link to a directory of the victim's.
        std::fs::rename(folder.path().join("docs"), outside.path().join("moved")).expect("mv");
        std::fs::write(outside.path().join("a.txt"), "victim's").expect("write");
        std::fs::write(outside.path().join("a (conflict).txt"), "planted").expect("write");
        std::os::unix::fs::symlink(outside.path(), folder.path().join("docs")).expect("link");
        let err = resolve(state.path(), &mut list, 0, Keep::Local).expect_err("refused");
        assert!(err.contains("not a directory"), "{err}");
        assert_eq!(
            std::fs::read_to_string(outside.path().join("a.txt")).expect("read"),
            "victim's"
        );
    }
}
