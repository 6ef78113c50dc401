//! The per-folder state database: `state.db` (SQLite, through rusqlite) in the folder's state
//! dir, never inside the synced folder.
//!
//! Tables (schema version in `PRAGMA user_version`):
//! - `nodes (id, bytes)`: the tree node cache ([`NodeDb`]): the remote tree's nodes as fetched
//!   and the local files' nodes as scanned; never file data. One row per node instead of one
//!   file per node: a folder of 20,000 files used to cost 20,000 file creations per side.
//! - `entries (tree, path, entry)`: the merge base (`tree` 0) and the flattened last-seen remote
//!   tree (`tree` 1), one row per path.
//! - `scan (path, record)`: the scan cache, keyed by path, holding (size, mtime, inode, ctime)
//!   and what the file was found to be.
//! - `meta (key, value)`: the last-seen remote head (`remote_seq`, `remote_root`),
//!   `remote_is_base`: the remote tree is the base (no `tree` 1 rows), as after a clean pass,
//!   and what the state belongs to (`folder_uid`, `root`; see [`crate::binding`]).
//!
//! Schema 2 added `remote_is_base` and nothing else: a schema 1 database opens as it is (its
//! remote rows are read) and is marked 2, so that an older Cairn, which would read the remote
//! tree as empty, refuses it instead.
//!
//! Values are postcard encodings of [`crate::state`]'s saved types. A save writes only the rows
//! that changed, in one transaction, so a pass that changed one file of 100,000 writes a few
//! rows, not the folder. WAL journal, `synchronous = FULL`: a committed save survives a crash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use cairn_store::{BlockId, BlockStore, Error as StoreError, Put};
use rusqlite::{Connection, OptionalExtension as _, params};

/// The schema this version writes.
const SCHEMA_VERSION: i64 = 2;

/// Node puts kept in memory before they are written (also written by [`NodeDb::sync`]).
const PENDING_NODES_MAX: usize = 8192;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS nodes (id BLOB PRIMARY KEY, bytes BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    tree INTEGER NOT NULL,
    path TEXT NOT NULL,
    entry BLOB NOT NULL,
    PRIMARY KEY (tree, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scan (path TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
";

/// One open `state.db`.
#[derive(Debug)]
pub struct StateDb {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// A row change of one table: `Some` to write, `None` to delete.
pub type Changes = Vec<(String, Option<Vec<u8>>)>;

impl StateDb {
    /// Opens (creating) `state.db` in `dir`; `fresh` tells whether it had no schema yet.
    ///
    /// # Errors
    /// A file that is not a database, a schema from a newer Cairn, IO errors. The message
    /// names the file.
    pub fn open(dir: &Path) -> Result<(StateDb, bool), String> {
        let path = dir.join("state.db");
        let fail = |e: rusqlite::Error| {
            format!(
                "the sync state '{}' cannot be opened ({e}); if it is damaged, move it away to start over (files are compared again, nothing is lost)",
                path.display()
            )
        };
        let conn = Connection::open(&path).map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(fail)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(fail)?;
        if version > SCHEMA_VERSION {
            return Err(format!(
                "the sync state '{}' was written by a newer Cairn (schema {version}); update Cairn, or move it away to start over (files are compared again, nothing is lost)",
                path.display()
            ));
        }
        let fresh = version == 0;
        if fresh {
            conn.execute_batch(SCHEMA).map_err(fail)?;
        }
        if version < SCHEMA_VERSION {
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(fail)?;
        }
        Ok((
            StateDb {
                conn: Mutex::new(conn),
                path,
            },
            fresh,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, e: rusqlite::Error) -> String {
        format!("the sync state '{}': {e}", self.path.display())
    }

    /// Every row of `entries` for `tree`, as (path, encoded entry).
    ///
    /// # Errors
    /// SQLite errors, naming the file.
    pub fn entries(&self, tree: i64) -> Result<Vec<(String, Vec<u8>)>, String> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT path, entry FROM entries WHERE tree = ?1")
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map([tree], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(|e| self.fail(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.fail(e))
    }

    /// Every row of `scan`, as (path, encoded record).
    ///
    /// # Errors
    /// SQLite errors, naming the file.
    pub fn scan(&self) -> Result<Vec<(String, Vec<u8>)>, String> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT path, record FROM scan")
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(|e| self.fail(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.fail(e))
    }

    /// Calls `each` with every scan cache row, in path order (byte order, as Rust orders
    /// strings), without holding them all.
    ///
    /// # Errors
    /// SQLite errors, naming the file; the first error of `each`.
    pub fn scan_each(
        &self,
        mut each: impl FnMut(String, Vec<u8>) -> Result<(), String>,
    ) -> Result<(), String> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT path, record FROM scan ORDER BY path")
            .map_err(|e| self.fail(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.fail(e))?;
        while let Some(row) = rows.next().map_err(|e| self.fail(e))? {
            each(
                row.get(0).map_err(|e| self.fail(e))?,
                row.get(1).map_err(|e| self.fail(e))?,
            )?;
        }
        Ok(())
    }

    /// A `meta` value.
    ///
    /// # Errors
    /// SQLite errors, naming the file.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.lock()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
            .map_err(|e| self.fail(e))
    }

    /// Writes one save in one transaction: the changed rows of the base (`tree` 0), the remote
    /// tree (`tree` 1; every row of it dropped first with `drop_remote_rows`) and the scan
    /// cache, and the `meta` values.
    ///
    /// # Errors
    /// SQLite errors, naming the file; nothing of the save is written then.
    pub fn write(
        &self,
        trees: [&Changes; 2],
        drop_remote_rows: bool,
        scan: &Changes,
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), String> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.fail(e))?;
        if drop_remote_rows {
            tx.execute("DELETE FROM entries WHERE tree = 1", [])
                .map_err(|e| self.fail(e))?;
        }
        {
            let mut put_entry = tx
                .prepare_cached(
                    "INSERT INTO entries (tree, path, entry) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tree, path) DO UPDATE SET entry = excluded.entry",
                )
                .map_err(|e| self.fail(e))?;
            let mut drop_entry = tx
                .prepare_cached("DELETE FROM entries WHERE tree = ?1 AND path = ?2")
                .map_err(|e| self.fail(e))?;
            for (tree, changes) in (0i64..).zip(trees) {
                for (path, value) in changes {
                    match value {
                        Some(bytes) => put_entry.execute(params![tree, path, bytes]),
                        None => drop_entry.execute(params![tree, path]),
                    }
                    .map_err(|e| self.fail(e))?;
                }
            }
            let mut put_scan = tx
                .prepare_cached(
                    "INSERT INTO scan (path, record) VALUES (?1, ?2)
                     ON CONFLICT (path) DO UPDATE SET record = excluded.record",
                )
                .map_err(|e| self.fail(e))?;
            let mut drop_scan = tx
                .prepare_cached("DELETE FROM scan WHERE path = ?1")
                .map_err(|e| self.fail(e))?;
            for (path, value) in scan {
                match value {
                    Some(bytes) => put_scan.execute(params![path, bytes]),
                    None => drop_scan.execute(params![path]),
                }
                .map_err(|e| self.fail(e))?;
            }
            let mut put_meta = tx
                .prepare_cached(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .map_err(|e| self.fail(e))?;
            for (key, value) in meta {
                put_meta
                    .execute(params![key, value])
                    .map_err(|e| self.fail(e))?;
            }
        }
        tx.commit().map_err(|e| self.fail(e))
    }

    fn store_error(&self, op: &'static str, e: rusqlite::Error) -> StoreError {
        StoreError::Io {
            op,
            path: self.path.clone(),
            source: std::io::Error::other(e),
        }
    }
}

/// The tree node cache in `state.db` (see the module docs), as a [`BlockStore`]: puts are kept
/// in memory and written in one transaction by [`BlockStore::sync`] (or when many pile up), as
/// [`cairn_store::fs::FsBlockStore`] batches its fsyncs. Every read is re-hashed.
#[derive(Debug)]
pub struct NodeDb {
    db: std::sync::Arc<StateDb>,
    pending: Mutex<HashMap<BlockId, Vec<u8>>>,
}

impl NodeDb {
    /// The node cache of `db`.
    pub fn new(db: std::sync::Arc<StateDb>) -> NodeDb {
        NodeDb {
            db,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<BlockId, Vec<u8>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stored(&self, id: &BlockId) -> cairn_store::Result<bool> {
        self.db
            .lock()
            .prepare_cached("SELECT 1 FROM nodes WHERE id = ?1")
            .and_then(|mut stmt| stmt.exists([id.as_bytes().as_slice()]))
            .map_err(|e| self.db.store_error("reading the node cache", e))
    }

    fn flush(&self, pending: &mut HashMap<BlockId, Vec<u8>>) -> cairn_store::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let fail = |e| self.db.store_error("writing the node cache", e);
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(fail)?;
        {
            let mut insert = tx
                .prepare_cached("INSERT OR IGNORE INTO nodes (id, bytes) VALUES (?1, ?2)")
                .map_err(fail)?;
            for (id, bytes) in pending.iter() {
                insert
                    .execute(params![id.as_bytes().as_slice(), bytes])
                    .map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)?;
        pending.clear();
        Ok(())
    }
}

impl BlockStore for NodeDb {
    fn has(&self, id: &BlockId) -> cairn_store::Result<bool> {
        if self.pending().contains_key(id) {
            return Ok(true);
        }
        self.stored(id)
    }

    fn put_many(&self, blocks: &[&[u8]]) -> cairn_store::Result<Vec<Put>> {
        let max = u64::from(cairn_store::limits::BLOCK_SIZE_MAX);
        let mut puts = Vec::with_capacity(blocks.len());
        for data in blocks {
            if data.len() as u64 > max {
                return Err(StoreError::BlockTooLarge {
                    actual: data.len() as u64,
                    max,
                });
            }
            let id = BlockId::of(data);
            let new = !self.has(&id)?;
            if new {
                let mut pending = self.pending();
                pending.insert(id, data.to_vec());
                if pending.len() >= PENDING_NODES_MAX {
                    self.flush(&mut pending)?;
                }
            }
            puts.push(Put {
                id,
                size: data.len() as u64,
                new,
                stored_size: if new { data.len() as u64 } else { 0 },
            });
        }
        Ok(puts)
    }

    fn get(&self, id: &BlockId) -> cairn_store::Result<Vec<u8>> {
        let pending = self.pending().get(id).cloned();
        let bytes = match pending {
            Some(bytes) => bytes,
            None => self
                .db
                .lock()
                .prepare_cached("SELECT bytes FROM nodes WHERE id = ?1")
                .and_then(|mut stmt| {
                    stmt.query_row([id.as_bytes().as_slice()], |row| row.get(0))
                        .optional()
                })
                .map_err(|e| self.db.store_error("reading the node cache", e))?
                .ok_or(StoreError::BlockMissing(*id))?,
        };
        let actual = BlockId::of(&bytes);
        if actual != *id {
            return Err(StoreError::BlockCorrupt { id: *id, actual });
        }
        Ok(bytes)
    }

    fn delete(&self, id: &BlockId) -> cairn_store::Result<bool> {
        let was_pending = self.pending().remove(id).is_some();
        let deleted = self
            .db
            .lock()
            .execute(
                "DELETE FROM nodes WHERE id = ?1",
                [id.as_bytes().as_slice()],
            )
            .map_err(|e| self.db.store_error("writing the node cache", e))?;
        Ok(was_pending || deleted > 0)
    }

    fn list(&self) -> cairn_store::Result<Vec<BlockId>> {
        let mut ids: Vec<BlockId> = self.pending().keys().copied().collect();
        let conn = self.db.lock();
        let fail = |e| self.db.store_error("reading the node cache", e);
        let mut stmt = conn.prepare_cached("SELECT id FROM nodes").map_err(fail)?;
        let rows = stmt
            .query_map([], |row| row.get::<_, Vec<u8>>(0))
            .map_err(fail)?;
        for row in rows {
            let bytes = row.map_err(fail)?;
            let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                self.db.store_error(
                    "reading the node cache",
                    rusqlite::Error::InvalidColumnType(0, "id".into(), rusqlite::types::Type::Blob),
                )
            })?;
            ids.push(BlockId::from_bytes(array));
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn sync(&self) -> cairn_store::Result<()> {
        let mut pending = self.pending();
        self.flush(&mut pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_survive_a_reopen_only_once_synced_and_are_rehashed_on_read() {
        let dir = tempfile::tempdir().expect("dir");
        let (db, fresh) = StateDb::open(dir.path()).expect("open");
        assert!(fresh);
        let nodes = NodeDb::new(std::sync::Arc::new(db));
        let puts = nodes.put_many(&[b"one", b"two", b"one"]).expect("put");
        assert_eq!(
            puts.iter().map(|p| p.new).collect::<Vec<_>>(),
            [true, true, false]
        );
        assert_eq!(nodes.get(&puts[1].id).expect("pending read"), b"two");
        nodes.sync().expect("sync");
        let unsynced = nodes.put(b"three").expect("put");
        drop(nodes);

        let (db, fresh) = StateDb::open(dir.path()).expect("reopen");
        assert!(!fresh);
        let db = std::sync::Arc::new(db);
        let nodes = NodeDb::new(std::sync::Arc::clone(&db));
        assert_eq!(nodes.get(&puts[0].id).expect("read"), b"one");
        assert!(!nodes.has(&unsynced.id).expect("has"), "never synced");
        assert_eq!(nodes.list().expect("list").len(), 2);
        // A row damaged at rest is an error, never data.
        db.lock()
            .execute(
                "UPDATE nodes SET bytes = ?1 WHERE id = ?2",
                params![b"tw0".as_slice(), puts[1].id.as_bytes().as_slice()],
            )
            .expect("damage");
        assert!(matches!(
            nodes.get(&puts[1].id),
            Err(StoreError::BlockCorrupt { .. })
        ));
        assert!(nodes.delete(&puts[0].id).expect("delete"));
        assert!(matches!(
            nodes.get(&puts[0].id),
            Err(StoreError::BlockMissing(_))
        ));
    }

    #[test]
    fn a_damaged_database_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("state.db"), vec![0x5a; 8192]).expect("garbage");
        let refused = StateDb::open(dir.path()).expect_err("refused");
        assert!(refused.contains("move it away"), "{refused}");
    }

    #[test]
    fn a_schema_from_a_newer_cairn_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().expect("dir");
        drop(StateDb::open(dir.path()).expect("open"));
        let conn = Connection::open(dir.path().join("state.db")).expect("raw");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("bump");
        drop(conn);
        let refused = StateDb::open(dir.path()).expect_err("refused");
        assert!(refused.contains("newer Cairn"), "{refused}");
    }
}
