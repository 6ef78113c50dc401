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
