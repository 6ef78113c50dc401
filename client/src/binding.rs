//! What a folder's sync state belongs to, so that it is never taken as the merge base of
//! anything else, and follows its folder when the folder moves.
//!
//! A merge base says "both sides had this": a path in the base that one side lacks was deleted
//! there, and the deletion is carried to the other side. Applied to the wrong pair of trees, it
//! deletes: a state made against one server folder, used against another (another server or
//! user, or the same name deleted and created again), would delete every local file the other
//! lacks; a state used for another directory at the same path (the folder deleted and made
//! again, a drive not mounted under its mount point) would delete on the server every file the
//! directory lacks. So the state records:
//!
//! - the server folder's `uid` (`GET /folders`), checked by [`crate::engine::Engine::bind`];
//! - the synced directory as a [`RootStamp`]: its path, inode and birth time, checked when the
//!   engine opens.
//!
//! When either does not match, the engine forgets the base and the last-seen remote tree: the
//! next pass compares the two sides as on a first sync, where nothing is deleted on either side
//! and files that differ keep both versions. The engine also forgets them when the server's
//! head is behind the head the state last saw (a server restored from an older backup).
//!
//! The state dir is named after the folder's path ([`crate::config::state_dir_in`]). A folder
//! moved (renamed) to another path keeps its inode and birth time, so [`adopt_moved`] finds its
//! old state dir and renames it to the new path's: the sync goes on where it was, instead of
//! starting over, where deletions made elsewhere in the meantime would come back.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, state_dir_in};
use crate::db::StateDb;

/// The identity of a synced directory, as recorded in its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootStamp {
    /// The canonical path, as bytes.
    pub path: Vec<u8>,
    /// The directory's inode number.
    pub inode: u64,
    /// Its birth time in ns since the epoch, where the filesystem keeps one.
    pub born_ns: Option<i64>,
}

impl RootStamp {
    /// The stamp of the directory at `path` (canonical).
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn of(path: &Path) -> io::Result<RootStamp> {
        use std::os::unix::ffi::OsStrExt as _;
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path)?;
        let born_ns = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_nanos()).ok());
        Ok(RootStamp {
            path: path.as_os_str().as_bytes().to_vec(),
            inode: meta.ino(),
            born_ns,
        })
    }

    /// Whether both stamps are of one directory (wherever it is now). The device number is
    /// left out: network and FUSE filesystems get another one at every mount.
    pub fn same_directory(&self, other: &RootStamp) -> bool {
        self.inode == other.inode && self.born_ns == other.born_ns
    }

    /// The recorded path.
    pub fn path(&self) -> PathBuf {
        use std::os::unix::ffi::OsStrExt as _;
        PathBuf::from(std::ffi::OsStr::from_bytes(&self.path))
    }
}

/// The `meta` key of the server folder's uid.
pub const FOLDER_UID_KEY: &str = "folder_uid";
/// The `meta` key of the [`RootStamp`].
pub const ROOT_KEY: &str = "root";

/// The root stamp recorded in the state dir `dir`, if any.
fn recorded_root(dir: &Path) -> Option<RootStamp> {
    let (db, fresh) = StateDb::open(dir).ok()?;
    if fresh {
        return None;
    }
    let bytes = db.meta(ROOT_KEY).ok()??;
    postcard::from_bytes::<Option<RootStamp>>(&bytes).ok()?
}

/// Whether the state dir `dir` holds nothing worth keeping: no `state.db`, or one that an
/// engine opened but never bound nor synced (as a first start that could not reach the server
/// leaves it). A state of an earlier Cairn, unbound but with a base, is kept.
fn unused(dir: &Path) -> bool {
    if !dir.join("state.db").exists() {
        return true;
    }
    let Ok((db, _)) = StateDb::open(dir) else {
        return false;
    };
    let unbound =
        matches!(db.meta(ROOT_KEY), Ok(None)) && matches!(db.meta(FOLDER_UID_KEY), Ok(None));
    let never_synced = matches!(db.meta("remote_seq"), Ok(None))
        && db.entries(0).is_ok_and(|rows| rows.is_empty());
    unbound && never_synced
}

/// When `folder` (canonical) has no sync state yet but is a folder that moved: the state dir of
/// its old path, renamed to the new path's; returns the old path. A state dir qualifies when
/// its recorded directory is this one (same inode and birth time) and is no longer at its
/// recorded path. An empty folder never adopts a state (a directory made anew may reuse a
/// deleted one's inode, and its emptiness would read as deleting everything), nor does a folder
/// two states could belong to.
///
/// # Errors
/// The folder cannot be read, or the rename fails.
pub fn adopt_moved(config_dir: &Path, folder: &Path) -> Result<Option<PathBuf>, ConfigError> {
    let target = state_dir_in(config_dir, folder)?;
    if !unused(&target) {
        return Ok(None);
    }
    let io_error = |path: &Path, source: io::Error| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let empty = std::fs::read_dir(folder)
        .map_err(|e| io_error(folder, e))?
        .next()
        .is_none();
    if empty {
        return Ok(None);
    }
    let stamp = RootStamp::of(folder).map_err(|e| io_error(folder, e))?;
    let states = config_dir.join("folders");
    let listing = match std::fs::read_dir(&states) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&states, e)),
    };
    let mut found = Vec::new();
    for item in listing.flatten() {
        let dir = item.path();
        if dir == target || !dir.join("state.db").is_file() {
            continue;
        }
        let Some(old) = recorded_root(&dir) else {
            continue;
        };
        // Its directory left the recorded path: nothing is there now, another directory is,
        // or the path leads elsewhere through a link. (Still there, it is another directory
        // on another filesystem that happens to have the same inode.)
        let left = match std::fs::canonicalize(old.path()) {
            Ok(now) => {
                now != old.path() || RootStamp::of(&now).is_ok_and(|s| !s.same_directory(&old))
            }
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        if left && old.same_directory(&stamp) {
            found.push((dir, old.path()));
        }
    }
    // None, or more than one: start over rather than guess.
    if found.len() != 1 {
        return Ok(None);
    }
    let (old_dir, old_path) = found.remove(0);
    // Not while an engine runs on it (its folder is gone, but a process may still hold it).
    let lock_path = old_dir.join("engine.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io_error(&lock_path, e))?;
    if lock.try_lock().is_err() {
        return Ok(None);
    }
    if target.exists() {
        // Left by a start that never synced (see `unused`): nothing to keep, unless another
        // process has just opened it.
        let target_lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(target.join("engine.lock"))
            .map_err(|e| io_error(&target, e))?;
        if target_lock.try_lock().is_err() {
            return Ok(None);
        }
        std::fs::remove_dir_all(&target).map_err(|e| io_error(&target, e))?;
    }
    std::fs::rename(&old_dir, &target).map_err(|e| io_error(&old_dir, e))?;
    drop(lock);
    Ok(Some(old_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    /// Records a state for `folder` (canonical) in its state dir, as an engine's save would.
    fn record_state(config: &Path, folder: &Path) -> PathBuf {
        let dir = state_dir_in(config, folder).expect("state dir");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (db, _) = StateDb::open(&dir).expect("open");
        let mut state = State::default();
        state.root = Some(RootStamp::of(folder).expect("stamp"));
        state.folder_uid = Some("f".repeat(32));
        state.remote_seq = 5;
        state.save(&db).expect("save");
        dir
    }

    fn folder_in(home: &Path, name: &str) -> PathBuf {
        let folder = home.join(name);
        std::fs::create_dir_all(&folder).expect("mkdir");
        std::fs::write(folder.join("notes.txt"), b"keep me").expect("write");
        folder.canonicalize().expect("canonical")
    }

    #[test]
    fn a_moved_folder_takes_its_state_along() {
        let home = tempfile::tempdir().expect("home");
        let config = home.path().join("config");
        let old = folder_in(home.path(), "Cairn");
        let old_state = record_state(&config, &old);
        let new = home.path().canonicalize().expect("home").join("Sync");
        std::fs::rename(&old, &new).expect("mv");
        // A start at the new path that never reached the server left an empty state there.
        let left_behind = state_dir_in(&config, &new).expect("state dir");
        std::fs::create_dir_all(&left_behind).expect("mkdir");
        drop(StateDb::open(&left_behind).expect("open"));

        assert_eq!(
            adopt_moved(&config, &new).expect("adopt"),
            Some(old.clone())
        );
        let new_state = state_dir_in(&config, &new).expect("state dir");
        assert!(!old_state.exists(), "moved, not copied");
        let (db, fresh) = StateDb::open(&new_state).expect("open");
        assert!(!fresh);
        assert_eq!(
            State::load(&db).expect("load").remote_seq,
            5,
            "the same state"
        );
        // Once adopted, it is its own: nothing more to adopt.
        assert_eq!(adopt_moved(&config, &new).expect("again"), None);
    }

    #[test]
    fn a_state_is_adopted_only_by_its_own_directory_when_it_left_its_path() {
        let home = tempfile::tempdir().expect("home");
        let config = home.path().join("config");
        let base = home.path().canonicalize().expect("home");

        // A copy is another directory: it starts over, and the original keeps its state.
        let original = folder_in(home.path(), "Cairn");
        let original_state = record_state(&config, &original);
        let copy = folder_in(home.path(), "Copy");
        assert_eq!(adopt_moved(&config, &copy).expect("copy"), None);
        assert!(original_state.join("state.db").exists());

        // Moved away, and another directory made at the old path: the moved one still
        // adopts it, since its directory left the path.
        let moved = base.join("Moved");
        std::fs::rename(&original, &moved).expect("mv");
        let _ = folder_in(home.path(), "Cairn");
        assert_eq!(
            adopt_moved(&config, &moved).expect("moved"),
            Some(original.clone())
        );

        // An empty directory never adopts (it may reuse a deleted one's inode).
        let empty_home = tempfile::tempdir().expect("home");
        let config = empty_home.path().join("config");
        let folder = folder_in(empty_home.path(), "Cairn");
        record_state(&config, &folder);
        let elsewhere = empty_home
            .path()
            .canonicalize()
            .expect("home")
            .join("Elsewhere");
        std::fs::rename(&folder, &elsewhere).expect("mv");
        std::fs::remove_file(elsewhere.join("notes.txt")).expect("rm");
        assert_eq!(adopt_moved(&config, &elsewhere).expect("empty"), None);
    }

    #[test]
    fn a_state_in_use_or_claimed_twice_is_not_adopted() {
        let home = tempfile::tempdir().expect("home");
        let config = home.path().join("config");
        let base = home.path().canonicalize().expect("home");
        let old = folder_in(home.path(), "Cairn");
        let old_state = record_state(&config, &old);
        let new = base.join("Sync");
        std::fs::rename(&old, &new).expect("mv");

        // An engine still holds it.
        let held = std::fs::File::create(old_state.join("engine.lock")).expect("lock file");
        held.lock().expect("lock");
        assert_eq!(adopt_moved(&config, &new).expect("held"), None);
        drop(held);

        // A state an earlier Cairn kept at the new path (synced, never bound) is its own.
        let own = state_dir_in(&config, &new).expect("state dir");
        std::fs::create_dir_all(&own).expect("mkdir");
        let (db, _) = StateDb::open(&own).expect("open");
        let mut earlier = State::default();
        earlier.remote_seq = 1;
        earlier.save(&db).expect("save");
        drop(db);
        assert_eq!(adopt_moved(&config, &new).expect("own"), None);
        std::fs::remove_dir_all(&own).expect("rm");

        // Two states claim the directory: no guess.
        let twin = config.join("folders").join("0000000000000000");
        std::fs::create_dir_all(&twin).expect("mkdir");
        std::fs::copy(old_state.join("state.db"), twin.join("state.db")).expect("copy");
        assert_eq!(adopt_moved(&config, &new).expect("twice"), None);
        std::fs::remove_dir_all(&twin).expect("rm");
        assert_eq!(adopt_moved(&config, &new).expect("once"), Some(old));
    }
}
