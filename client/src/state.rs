//! The per-folder sync state, kept in the config dir (never inside the synced folder).
//!
//! - `nodes/`: a block store holding tree nodes only (the remote tree's nodes as fetched, and
//!   the local files' nodes as scanned); never file data.
//! - `state.bin`: a postcard snapshot, written atomically (temp file, fsync, rename, directory
//!   fsync) at the end of every pass that changed something: the merge base (per path), the
//!   last-seen remote head and its flattened tree, and the scan cache keyed by
//!   (path, size, mtime, inode, ctime) so an unchanged file is never re-read.
//!
//! A snapshot costs O(folder) to write. It is written only when a pass changed something, so a
//! quiet folder costs nothing; an incremental store (SQLite) is the step up if that shows in
//! profiles.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use cairn_protocol::path::RelPath;
use cairn_store::NodeId;
use serde::{Deserialize, Serialize};

use crate::plan::{Entry, Kind, Tree};

/// Bumped when the snapshot's shape changes; an older snapshot is refused with a clear message.
const STATE_VERSION: u32 = 1;

/// What the scan cache knows about one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRecord {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns.
    pub mtime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Status change time, ns.
    pub ctime_ns: i64,
    /// The entry the file was found to be.
    pub entry: SavedEntry,
}

/// An [`Entry`] as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedEntry {
    kind: u8,
    content: [u8; 32],
    node: NodeId,
    size: u64,
    mode: u32,
    mtime_ns: i64,
}

impl From<&Entry> for SavedEntry {
    fn from(e: &Entry) -> Self {
        SavedEntry {
            kind: match e.kind {
                Kind::File => 1,
                Kind::Dir => 2,
                Kind::Symlink => 3,
            },
            content: e.content,
            node: e.node,
            size: e.size,
            mode: e.mode,
            mtime_ns: e.mtime_ns,
        }
    }
}

impl SavedEntry {
    /// Back to an [`Entry`].
    pub fn entry(&self) -> Entry {
        Entry {
            kind: match self.kind {
                1 => Kind::File,
                3 => Kind::Symlink,
                _ => Kind::Dir,
            },
            content: self.content,
            node: self.node,
            size: self.size,
            mode: self.mode,
            mtime_ns: self.mtime_ns,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    base: Vec<(String, SavedEntry)>,
    remote_seq: u64,
    remote_root: Option<NodeId>,
    remote: Vec<(String, SavedEntry)>,
    scan: Vec<(String, ScanRecord)>,
}

/// The state in memory.
#[derive(Debug, Default, Clone)]
pub struct State {
    /// The merge base, per path.
    pub base: Tree,
    /// The last remote head seen and synced from.
    pub remote_seq: u64,
    /// Its root (`None` before the first pass).
    pub remote_root: Option<NodeId>,
    /// The remote tree at `remote_root`, flattened.
    pub remote: Tree,
    /// The scan cache.
    pub scan: HashMap<String, ScanRecord>,
}

fn tree_from(items: Vec<(String, SavedEntry)>) -> Result<Tree, String> {
    items
        .into_iter()
        .map(|(p, e)| {
            RelPath::parse(&p)
                .map(|p| (p, e.entry()))
                .map_err(|e| e.to_string())
        })
        .collect()
}

fn tree_to(tree: &Tree) -> Vec<(String, SavedEntry)> {
    tree.iter()
        .map(|(p, e)| (p.as_str().to_owned(), SavedEntry::from(e)))
        .collect()
}

impl State {
    /// Loads the snapshot in `dir`, or an empty state when there is none.
    ///
    /// # Errors
    /// An unreadable or damaged snapshot (the message names the file and what to do).
    pub fn load(dir: &Path) -> Result<State, String> {
        let path = dir.join("state.bin");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(format!("reading '{}': {e}", path.display())),
        };
        let damaged = |why: String| {
            format!(
                "the sync state '{}' is damaged ({why}); move it away to start over (files are compared again, nothing is lost)",
                path.display()
            )
        };
        let snapshot: Snapshot =
            postcard::from_bytes(&bytes).map_err(|e| damaged(e.to_string()))?;
        if snapshot.version != STATE_VERSION {
            return Err(damaged(format!("version {}", snapshot.version)));
        }
        Ok(State {
            base: tree_from(snapshot.base).map_err(damaged)?,
            remote_seq: snapshot.remote_seq,
            remote_root: snapshot.remote_root,
            remote: tree_from(snapshot.remote).map_err(damaged)?,
            scan: snapshot.scan.into_iter().collect(),
        })
    }

    /// Writes the snapshot atomically.
    ///
    /// # Errors
    /// IO errors.
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let mut scan: Vec<(String, ScanRecord)> = self
            .scan
            .iter()
            .map(|(p, r)| (p.clone(), r.clone()))
            .collect();
        scan.sort_by(|a, b| a.0.cmp(&b.0));
        let snapshot = Snapshot {
            version: STATE_VERSION,
            base: tree_to(&self.base),
            remote_seq: self.remote_seq,
            remote_root: self.remote_root,
            remote: tree_to(&self.remote),
            scan,
        };
        let bytes = postcard::to_allocvec(&snapshot).map_err(|e| e.to_string())?;
        write_atomic(&dir.join("state.bin"), &bytes)
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory: fsync, rename, fsync of
/// the directory.
///
/// # Errors
/// IO errors, naming the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let fail = |e: std::io::Error| format!("writing '{}': {e}", path.display());
    let mut temp = tempfile::NamedTempFile::new_in(&dir).map_err(fail)?;
    temp.write_all(bytes).map_err(fail)?;
    temp.as_file().sync_all().map_err(fail)?;
    temp.persist(path).map_err(|e| fail(e.error))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(fail)
}
