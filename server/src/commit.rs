//! The one commit path: REST uploads and deletes (and later QUIC sync) change a folder only here.
//!
//! A commit edits the folder's tree at one path (new nodes go to the block store, which is
//! synced), then compare-and-swaps the folder head in the same SQL transaction that records the
//! commit, the file index row, the new version and the owner's quota. A lost race re-reads the
//! head and redoes the edit, up to [`COMMIT_ATTEMPTS_MAX`] times.

use std::sync::Arc;

use cairn_protocol::api::{Change, Event};
use cairn_protocol::path::RelPath;
use cairn_store::edit::{Edit, edit};
use cairn_store::node::{DirEntry, EntryKind};
use cairn_store::{BlockStore, NodeId};

use crate::api::error::ApiError;
use crate::api::{AppState, now_ms};
use crate::db::{self, CommitOutcome, CommitRecord, FileRow};
use crate::events::UserEvent;
use crate::limits::COMMIT_ATTEMPTS_MAX;

/// A committed change.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The commit's sequence number.
    pub seq: i64,
    /// The file's index row after the change.
    pub file: FileRow,
}

/// Puts `entry` at `path` (`Some`) or removes the path (`None`) in the user's folder.
///
/// # Errors
/// [`ApiError::NotFound`] removing an absent path, [`ApiError::TooLarge`] over quota,
/// [`ApiError::Conflict`] when a parent on the path is a file or the head keeps moving.
pub async fn commit_path(
    state: &AppState,
    user_id: i64,
    folder_name: &str,
    path: &RelPath,
    entry: Option<DirEntry>,
    device: &str,
) -> Result<Committed, ApiError> {
    for _ in 0..COMMIT_ATTEMPTS_MAX {
        let folder = db::folder(&state.db, user_id, folder_name)
            .await?
            .ok_or(ApiError::NotFound("folder"))?;
        let base: NodeId = folder.head_root.parse().map_err(ApiError::internal)?;
        let change = match &entry {
            Some(entry) => Edit::Put(entry.clone()),
            None => Edit::Remove,
        };
        let store = Arc::clone(&state.store);
        let names = path.names();
        let edited = tokio::task::spawn_blocking(move || {
            let edited = edit(store.as_ref(), &base, &names, &change)?;
            store.sync()?;
            Ok::<_, cairn_store::Error>(edited)
        })
        .await?
        .map_err(|err| match err {
            cairn_store::Error::InvalidName { reason, .. } => ApiError::Conflict(
                "path_conflict",
                format!("cannot write '{path}': a parent {reason}"),
            ),
            other => ApiError::internal(other),
        })?;
        let previous_size = edited
            .previous
            .as_ref()
            .filter(|e| e.kind == EntryKind::File)
            .map_or(0, |e| e.size);
        if entry.is_none() && edited.previous.is_none() {
            return Err(ApiError::NotFound("file"));
        }
        let new_root = edited.root.to_string();
        let content_hash = entry.as_ref().map(|e| e.child.to_string());
        let new_size = entry.as_ref().map_or(0, |e| e.size);
        let record = CommitRecord {
            folder_id: folder.id,
            owner_id: user_id,
            base_seq: folder.head_seq,
            new_root: &new_root,
            device,
            now: now_ms(),
            path: path.as_str(),
            content: entry.as_ref().map(|e| {
                (
                    i64::try_from(e.size).unwrap_or(i64::MAX),
                    content_hash.as_deref().unwrap_or(""),
                )
            }),
            usage_delta: i64::try_from(new_size).unwrap_or(i64::MAX)
                - i64::try_from(previous_size).unwrap_or(0),
        };
        match db::commit(&state.db, &record).await? {
            CommitOutcome::Done { seq, file } => {
                publish(state, user_id, folder_name, seq, &new_root, &file);
                return Ok(Committed { seq, file });
            }
            CommitOutcome::Stale => continue,
            CommitOutcome::OverQuota => {
                return Err(ApiError::TooLarge("quota_exceeded", "this change would exceed your storage quota; delete files or ask for more space".to_owned()));
            }
        }
    }
    Err(ApiError::Conflict(
        "busy",
        "the folder changed too often while committing; try again".to_owned(),
    ))
}

fn publish(state: &AppState, user_id: i64, folder: &str, seq: i64, root: &str, file: &FileRow) {
    let seq = u64::try_from(seq).unwrap_or(0);
    state.bus.publish(UserEvent {
        user_id,
        event: Event::HeadChanged {
            folder: folder.to_owned(),
            seq,
            root: root.to_owned(),
        },
    });
    state.bus.publish(UserEvent {
        user_id,
        event: Event::FileChanged {
            folder: folder.to_owned(),
            change: change_of(seq, file),
        },
    });
}

/// The change a file row represents after commit `seq`.
pub fn change_of(seq: u64, file: &FileRow) -> Change {
    Change {
        seq,
        id: file.id,
        path: file.path.clone(),
        version: u64::try_from(file.version).unwrap_or(0),
        deleted: file.deleted != 0,
        size: u64::try_from(file.size).unwrap_or(0),
        hash: file.hash.clone(),
    }
}
