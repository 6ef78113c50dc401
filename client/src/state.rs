//! The per-folder sync state, kept in the config dir (never inside the synced folder), in
//! [`crate::db::StateDb`] (`state.db`): the merge base (per path), the last-seen remote head and
//! its flattened tree, and the scan cache keyed by (path, size, mtime, inode, ctime) so an
//! unchanged file is never re-read. The whole state is in memory while the engine runs; a save
//! writes only the rows that changed, at the end of every pass that changed something.
//!
//! Earlier versions kept a postcard snapshot (`state.bin`) and a node store directory
//! (`nodes/`); [`import_legacy`] moves them into the database once.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_protocol::path::RelPath;
use cairn_store::NodeId;
use serde::{Deserialize, Serialize};

use crate::binding::{FOLDER_UID_KEY, ROOT_KEY, RootStamp};
use crate::db::{Changes, StateDb};
use crate::plan::{Entry, Kind, Tree};

/// The version of the legacy snapshot (`state.bin`) this code can import.
const STATE_VERSION: u32 = 1;

/// `entries.tree` of the merge base and of the remote tree.
const BASE: i64 = 0;
const REMOTE: i64 = 1;

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
///
/// The two trees are shared: after a clean pass the base and the remote tree are one map
/// (100,000 entries are tens of MB), and a tree that a pass did not replace is not copied.
#[derive(Debug, Default, Clone)]
pub struct State {
    /// The merge base, per path.
    pub base: Arc<Tree>,
    /// The last remote head seen and synced from.
    pub remote_seq: u64,
    /// Its root (`None` before the first pass).
    pub remote_root: Option<NodeId>,
    /// The remote tree at `remote_root`, flattened.
    pub remote: Arc<Tree>,
    /// The scan cache.
    pub scan: HashMap<String, ScanRecord>,
    /// The uid of the server folder the base was synced with (`None`: not known yet, as in a
    /// new state or one saved before uids; see [`crate::binding`]).
    pub folder_uid: Option<String>,
    /// The directory the base was synced in (`None`: not recorded yet).
    pub root: Option<RootStamp>,
    /// The `.cairnignore` (its [`crate::ignores::Ignores::fingerprint`]) the remote tree was
    /// kept under: the tree leaves out what those rules ignored.
    pub ignore_rules: Option<[u8; 32]>,
    /// The base and remote trees as last loaded or saved: a save compares with them in
    /// memory instead of reading the stored rows back.
    saved: Option<[Arc<Tree>; 2]>,
    /// Whether the stored remote tree is rows of its own; else it is the base (`meta`
    /// `remote_is_base`), as after every clean pass, and neither written nor read twice.
    remote_rows: bool,
}

/// The `meta` key of [`State::ignore_rules`].
const IGNORE_RULES_KEY: &str = "ignore_rules";

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

#[cfg(test)]
fn tree_to(tree: &Tree) -> Vec<(String, SavedEntry)> {
    tree.iter()
        .map(|(p, e)| (p.as_str().to_owned(), SavedEntry::from(e)))
        .collect()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("a damaged {what} row ({e})"))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(value).map_err(|e| e.to_string())
}

/// The rows of `wanted` that differ from `stored`: to write, or (absent from `wanted`) to
/// delete.
fn changes(
    stored: Vec<(String, Vec<u8>)>,
    wanted: impl Iterator<Item = Result<(String, Vec<u8>), String>>,
) -> Result<Changes, String> {
    let mut stored: HashMap<String, Vec<u8>> = stored.into_iter().collect();
    let mut out = Vec::new();
    for row in wanted {
        let (path, bytes) = row?;
        if stored.remove(&path).as_ref() != Some(&bytes) {
            out.push((path, Some(bytes)));
        }
    }
    out.extend(stored.into_keys().map(|path| (path, None)));
    Ok(out)
}

/// The rows to write for `new` where the stored rows are `old`'s: a merge of the two sorted
/// maps, with nothing to do when they are one map.
fn tree_changes(old: &Arc<Tree>, new: &Arc<Tree>) -> Result<Changes, String> {
    use std::cmp::Ordering;
    let mut out = Vec::new();
    if Arc::ptr_eq(old, new) {
        return Ok(out);
    }
    let row = |e: &Entry| encode(&SavedEntry::from(e));
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((pa, _)), Some((pb, _))) => pa.cmp(pb),
        };
        match order {
            Ordering::Less => {
                let (path, _) = a.next().expect("peeked");
                out.push((path.as_str().to_owned(), None));
            }
            Ordering::Greater => {
                let (path, entry) = b.next().expect("peeked");
                out.push((path.as_str().to_owned(), Some(row(entry)?)));
            }
            Ordering::Equal => {
                let ((_, was), (path, entry)) =
                    (a.next().expect("peeked"), b.next().expect("peeked"));
                if was != entry {
                    out.push((path.as_str().to_owned(), Some(row(entry)?)));
                }
            }
        }
    }
    Ok(out)
}

/// The scan cache rows to write: `scan` against the stored rows, both walked in path order, so
/// the stored rows are never all in memory (100,000 of them were 40 MB at the peak of a save).
fn scan_changes(db: &StateDb, scan: &HashMap<String, ScanRecord>) -> Result<Changes, String> {
    let mut wanted: Vec<(&String, &ScanRecord)> = scan.iter().collect();
    wanted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut wanted = wanted.into_iter().peekable();
    let mut out = Vec::new();
    db.scan_each(|path, stored| {
        while let Some((new, record)) = wanted.next_if(|(p, _)| p.as_str() < path.as_str()) {
            out.push((new.clone(), Some(encode(record)?)));
        }
        match wanted.next_if(|(p, _)| **p == path) {
            Some((_, record)) => {
                let bytes = encode(record)?;
                if bytes != stored {
                    out.push((path, Some(bytes)));
                }
            }
            None => out.push((path, None)),
        }
        Ok(())
    })?;
    for (new, record) in wanted {
        out.push((new.clone(), Some(encode(record)?)));
    }
    Ok(out)
}

impl State {
    /// Loads the state from `db` (empty for a new database).
    ///
    /// # Errors
    /// An unreadable or damaged database (the message names it and says what to do).
    pub fn load(db: &StateDb) -> Result<State, String> {
        let damaged = |why: String| {
            format!(
                "the sync state is damaged ({why}); move the folder's state.db away to start over (files are compared again, nothing is lost)"
            )
        };
        let tree = |tree: i64| -> Result<Tree, String> {
            db.entries(tree)?
                .into_iter()
                .map(|(path, bytes)| {
                    let entry: SavedEntry = decode(&bytes, "tree").map_err(damaged)?;
                    let path = RelPath::parse(&path).map_err(|e| damaged(e.to_string()))?;
                    Ok((path, entry.entry()))
                })
                .collect()
        };
        let remote_is_base = match db.meta("remote_is_base")? {
            Some(bytes) => decode(&bytes, "meta").map_err(damaged)?,
            None => false,
        };
        let base = Arc::new(tree(BASE)?);
        let remote = if remote_is_base {
            Arc::clone(&base)
        } else {
            let stored = tree(REMOTE)?;
            // One map when they are equal (saved by an earlier version).
            if stored == *base {
                Arc::clone(&base)
            } else {
                Arc::new(stored)
            }
        };
        let scan = db
            .scan()?
            .into_iter()
            .map(|(path, bytes)| Ok((path, decode(&bytes, "scan cache").map_err(damaged)?)))
            .collect::<Result<_, String>>()?;
        let remote_seq = match db.meta("remote_seq")? {
            Some(bytes) => decode(&bytes, "meta").map_err(damaged)?,
            None => 0,
        };
        let remote_root = match db.meta("remote_root")? {
            Some(bytes) => decode(&bytes, "meta").map_err(damaged)?,
            None => None,
        };
        let folder_uid = match db.meta(FOLDER_UID_KEY)? {
            Some(bytes) => decode(&bytes, "meta").map_err(damaged)?,
            None => None,
        };
        let root = match db.meta(ROOT_KEY)? {
            Some(bytes) => decode(&bytes, "meta").map_err(damaged)?,
            None => None,
        };
        let ignore_rules = match db.meta(IGNORE_RULES_KEY)? {
            Some(bytes) => decode(&bytes, "meta").map_err(damaged)?,
            None => None,
        };
        Ok(State {
            saved: Some([Arc::clone(&base), Arc::clone(&remote)]),
            remote_rows: !remote_is_base,
            base,
            remote_seq,
            remote_root,
            remote,
            scan,
            folder_uid,
            root,
            ignore_rules,
        })
    }

    /// Saves the state into `db`: only the rows that changed, in one transaction.
    ///
    /// # Errors
    /// SQLite errors; nothing of this save is written then.
    pub fn save(&mut self, db: &StateDb) -> Result<(), String> {
        let rows = |tree: &Tree| {
            tree.iter()
                .map(|(p, e)| Ok((p.as_str().to_owned(), encode(&SavedEntry::from(e))?)))
                .collect::<Vec<_>>()
        };
        // The usual case after a pass: one map, stored once.
        let shared = Arc::ptr_eq(&self.base, &self.remote);
        let base = match &self.saved {
            Some([old_base, _]) => tree_changes(old_base, &self.base)?,
            None => changes(db.entries(BASE)?, rows(&self.base).into_iter())?,
        };
        let remote = match &self.saved {
            _ if shared => Vec::new(),
            Some([_, old_remote]) if self.remote_rows => tree_changes(old_remote, &self.remote)?,
            // Stored as the base until now: every row.
            Some(_) => tree_changes(&Arc::default(), &self.remote)?,
            None => changes(db.entries(REMOTE)?, rows(&self.remote).into_iter())?,
        };
        let drop_remote_rows = shared && (self.remote_rows || self.saved.is_none());
        let scan = scan_changes(db, &self.scan)?;
        db.write(
            [&base, &remote],
            drop_remote_rows,
            &scan,
            &[
                ("remote_seq", encode(&self.remote_seq)?),
                ("remote_root", encode(&self.remote_root)?),
                ("remote_is_base", encode(&shared)?),
                (FOLDER_UID_KEY, encode(&self.folder_uid)?),
                (ROOT_KEY, encode(&self.root)?),
                (IGNORE_RULES_KEY, encode(&self.ignore_rules)?),
            ],
        )?;
        self.saved = Some([Arc::clone(&self.base), Arc::clone(&self.remote)]);
        self.remote_rows = !shared;
        Ok(())
    }
}

/// Moves an earlier version's state of `dir` (a `state.bin` snapshot and a `nodes/` node
/// store) into `db` and `nodes`, then removes them; `None` when there is none. Safe to repeat
/// after a crash: the snapshot goes last.
///
/// # Errors
/// An unreadable or damaged snapshot (the message names the file and what to do); SQLite or IO
/// errors.
pub fn import_legacy(
    dir: &Path,
    db: &StateDb,
    nodes: &crate::db::NodeDb,
) -> Result<Option<State>, String> {
    use cairn_store::BlockStore as _;
    let path = dir.join("state.bin");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading '{}': {e}", path.display())),
    };
    let damaged = |why: String| {
        format!(
            "the sync state '{}' is damaged ({why}); move it away to start over (files are compared again, nothing is lost)",
            path.display()
        )
    };
    let snapshot: Snapshot = postcard::from_bytes(&bytes).map_err(|e| damaged(e.to_string()))?;
    if snapshot.version != STATE_VERSION {
        return Err(damaged(format!("version {}", snapshot.version)));
    }
    let mut state = State {
        base: Arc::new(tree_from(snapshot.base).map_err(damaged)?),
        remote_seq: snapshot.remote_seq,
        remote_root: snapshot.remote_root,
        remote: Arc::new(tree_from(snapshot.remote).map_err(damaged)?),
        scan: snapshot.scan.into_iter().collect(),
        saved: None,
        remote_rows: false,
        folder_uid: None,
        root: None,
        ignore_rules: None,
    };
    let old_nodes = dir.join("nodes");
    if old_nodes.is_dir() {
        let store = cairn_store::fs::FsBlockStore::open(
            &old_nodes,
            cairn_store::fs::FsStoreOptions::DEFAULT,
        )
        .map_err(|e| e.to_string())?;
        let ids = store.list().map_err(|e| e.to_string())?;
        for batch in ids.chunks(1024) {
            // A node that no longer reads right is left behind: it is a cache, fetched again.
            let blocks: Vec<Vec<u8>> = batch.iter().filter_map(|id| store.get(id).ok()).collect();
            let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
            nodes.put_many(&refs).map_err(|e| e.to_string())?;
        }
    }
    nodes.sync().map_err(|e| e.to_string())?;
    state.save(db)?;
    std::fs::remove_file(&path).map_err(|e| format!("removing '{}': {e}", path.display()))?;
    let _ = std::fs::remove_dir_all(&old_nodes);
    Ok(Some(state))
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

#[cfg(test)]
mod tests {
    use cairn_store::BlockStore as _;

    use super::*;
    use crate::db::NodeDb;

    fn entry(seed: u8) -> Entry {
        Entry {
            kind: Kind::File,
            content: [seed; 32],
            node: NodeId::of(&[seed]),
            size: u64::from(seed),
            mode: 0o644,
            mtime_ns: i64::from(seed) * 1_000,
        }
    }

    fn record(seed: u8) -> ScanRecord {
        ScanRecord {
            size: u64::from(seed),
            mtime_ns: 1,
            inode: u64::from(seed) + 100,
            ctime_ns: 2,
            entry: SavedEntry::from(&entry(seed)),
        }
    }

    fn path(p: &str) -> RelPath {
        RelPath::parse(p).expect("path")
    }

    fn same(a: &State, b: &State) -> bool {
        a.base == b.base
            && a.remote == b.remote
            && a.scan == b.scan
            && a.remote_seq == b.remote_seq
            && a.remote_root == b.remote_root
            && a.folder_uid == b.folder_uid
            && a.root == b.root
    }

    #[test]
    fn a_save_writes_only_what_changed_and_loads_back_the_same() {
        let dir = tempfile::tempdir().expect("dir");
        let (db, _) = StateDb::open(dir.path()).expect("open");
        let mut state = State::default();
        for i in 0..50u8 {
            Arc::make_mut(&mut state.base).insert(path(&format!("f{i}")), entry(i));
            Arc::make_mut(&mut state.remote).insert(path(&format!("f{i}")), entry(i));
            state.scan.insert(format!("f{i}"), record(i));
        }
        state.remote_seq = 7;
        state.remote_root = Some(NodeId::of(b"root"));
        state.folder_uid = Some("0123456789abcdef0123456789abcdef".into());
        state.root = Some(RootStamp {
            path: b"/home/ann/Cairn".to_vec(),
            inode: 4242,
            born_ns: Some(1_700_000_000_123_456_789),
        });
        state.save(&db).expect("save");
        assert!(same(&State::load(&db).expect("load"), &state));

        // One file edited, one deleted, one added.
        Arc::make_mut(&mut state.base).insert(path("f1"), entry(201));
        Arc::make_mut(&mut state.base).remove(&path("f2"));
        Arc::make_mut(&mut state.remote).insert(path("new"), entry(202));
        state.scan.remove("f3");
        state.remote_seq = 8;
        let rows = |tree: &Tree, stored: i64| {
            changes(
                db.entries(stored).expect("rows"),
                tree.iter()
                    .map(|(p, e)| Ok((p.as_str().to_owned(), encode(&SavedEntry::from(e))?))),
            )
            .expect("changes")
        };
        assert_eq!(rows(&state.base, BASE).len(), 2, "an edit and a delete");
        assert_eq!(rows(&state.remote, REMOTE).len(), 1, "an addition");
        state.save(&db).expect("save again");
        assert!(same(&State::load(&db).expect("load"), &state));
        assert!(rows(&state.base, BASE).is_empty(), "nothing left to write");

        // After a clean pass the base and the remote tree are one map, in memory and on load.
        let mut merged = Tree::clone(&state.base);
        merged.insert(path("merged"), entry(203));
        state.base = Arc::new(merged);
        state.remote = Arc::clone(&state.base);
        state.scan.insert("merged".into(), record(203));
        state.save(&db).expect("save the merge");
        let loaded = State::load(&db).expect("load");
        assert!(same(&loaded, &state));
        assert!(
            Arc::ptr_eq(&loaded.base, &loaded.remote),
            "loaded as one map"
        );
        assert!(
            db.entries(REMOTE).expect("rows").is_empty(),
            "the remote tree is stored once, as the base"
        );

        // Apart again: the remote tree gets every row of its own.
        let mut remote = Tree::clone(&state.remote);
        remote.insert(path("only remote"), entry(204));
        state.remote = Arc::new(remote);
        state.save(&db).expect("save apart");
        let loaded = State::load(&db).expect("load");
        assert!(same(&loaded, &state));
        assert!(!Arc::ptr_eq(&loaded.base, &loaded.remote));
        assert_eq!(db.entries(REMOTE).expect("rows").len(), state.remote.len());

        // And one map again, from rows of its own (as an earlier version saved it).
        let mut state = loaded;
        state.remote = Arc::clone(&state.base);
        state.save(&db).expect("save one map");
        assert!(db.entries(REMOTE).expect("rows").is_empty());
        assert!(same(&State::load(&db).expect("load"), &state));
    }

    #[test]
    fn an_older_snapshot_and_node_store_move_into_the_database_once() {
        let dir = tempfile::tempdir().expect("dir");
        let mut state = State::default();
        Arc::make_mut(&mut state.base).insert(path("docs/a.txt"), entry(1));
        Arc::make_mut(&mut state.remote).insert(path("docs/a.txt"), entry(1));
        state.scan.insert("docs/a.txt".into(), record(1));
        state.remote_seq = 3;
        state.remote_root = Some(NodeId::of(b"root"));
        let snapshot = Snapshot {
            version: STATE_VERSION,
            base: tree_to(&state.base),
            remote_seq: state.remote_seq,
            remote_root: state.remote_root,
            remote: tree_to(&state.remote),
            scan: state
                .scan
                .iter()
                .map(|(p, r)| (p.clone(), r.clone()))
                .collect(),
        };
        std::fs::write(
            dir.path().join("state.bin"),
            postcard::to_allocvec(&snapshot).expect("encode"),
        )
        .expect("write snapshot");
        let old = cairn_store::fs::FsBlockStore::open(
            dir.path().join("nodes"),
            cairn_store::fs::FsStoreOptions::DEFAULT,
        )
        .expect("old nodes");
        let node = old.put(b"a node").expect("put");
        old.sync().expect("sync");
        drop(old);

        let (db, _) = StateDb::open(dir.path()).expect("open");
        let db = std::sync::Arc::new(db);
        let nodes = NodeDb::new(std::sync::Arc::clone(&db));
        let imported = import_legacy(dir.path(), &db, &nodes)
            .expect("import")
            .expect("there was one");
        assert!(same(&imported, &state));
        assert!(same(&State::load(&db).expect("load"), &state));
        assert_eq!(nodes.get(&node.id).expect("node moved"), b"a node");
        assert!(!dir.path().join("state.bin").exists());
        assert!(!dir.path().join("nodes").exists());
        assert!(
            import_legacy(dir.path(), &db, &nodes)
                .expect("again")
                .is_none()
        );
    }
}
