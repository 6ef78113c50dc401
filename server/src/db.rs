//! Metadata in SQL through `sqlx::Any`: SQLite (the embedded default) or PostgreSQL.
//!
//! One set of queries serves both: `$N` placeholders (SQLite reads them as numbered
//! parameters), `ON CONFLICT` upserts and `RETURNING`, all supported by both engines. Times are
//! Unix milliseconds, flags 0/1 integers, ids hex text, so every value crosses `Any` as `i64` or
//! `String`. Every write transaction starts with a write, so SQLite takes its write lock at once
//! and waits on `busy_timeout` instead of failing a lock upgrade.
//!
//! This module holds SQL and nothing else: no HTTP, no decisions.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, install_default_drivers};
use sqlx::{AnyConnection, AnyPool, Executor, FromRow, Row};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

/// Which engine a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite, one file in the data directory.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The metadata database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    engine: Engine,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// A database error, or a unique constraint that a caller wants to tell apart.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A row with the same unique key exists.
    #[error("already exists")]
    Conflict,
    /// Anything else.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Result with [`DbError`].
pub type DbResult<T> = Result<T, DbError>;

/// A new folder's identity: 128 random bits, hex (see `migrations/*/0005_folder_uid.sql`).
fn new_folder_uid() -> DbResult<String> {
    use rand::TryRngCore as _;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| DbError::Sql(sqlx::Error::Protocol(format!("no randomness: {e}"))))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn map_unique(err: sqlx::Error) -> DbError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => DbError::Conflict,
        _ => DbError::Sql(err),
    }
}

impl Db {
    /// Connects (creating a SQLite file if needed).
    ///
    /// # Errors
    /// Connection errors.
    pub async fn connect(url: &str) -> DbResult<Db> {
        install_default_drivers();
        let engine = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Engine::Postgres
        } else {
            Engine::Sqlite
        };
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if engine == Engine::Sqlite { 4 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Db { pool, engine })
    }

    /// Runs the migrations that have not run yet.
    ///
    /// # Errors
    /// Migration errors.
    pub async fn migrate(&self) -> DbResult<()> {
        match self.engine {
            Engine::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Engine::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// The engine behind the pool.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The pool, for transactions.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A cheap round trip, for `/health`.
    ///
    /// # Errors
    /// When the database does not answer.
    pub async fn ping(&self) -> DbResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A user's storage use and quota, bytes.
///
/// # Errors
/// SQL errors.
pub async fn usage(db: &Db, user_id: i64) -> DbResult<(i64, i64)> {
    let row = sqlx::query("SELECT used_bytes, quota_bytes FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(&db.pool)
        .await?;
    Ok((row.try_get("used_bytes")?, row.try_get("quota_bytes")?))
}

/// What an upload to one of a user's folders may take, read in one query: the folder, the
/// owner's usage, quota and bytes uploaded but not committed, and the size of the live file the
/// upload replaces (0 when there is none, or no path yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadBudget {
    pub folder_id: i64,
    pub used: i64,
    pub quota: i64,
    pub pending: i64,
    pub replaced: i64,
}

/// Reads an [`UploadBudget`]; `None` when the user has no such folder.
///
/// # Errors
/// SQL errors.
pub async fn upload_budget(
    db: &Db,
    user_id: i64,
    folder: &str,
    path: Option<&str>,
) -> DbResult<Option<UploadBudget>> {
    let row = sqlx::query(
        "SELECT f.id AS folder_id, u.used_bytes, u.quota_bytes, u.pending_bytes, \
         COALESCE((SELECT size FROM files \
                   WHERE folder_id = f.id AND path = $3 AND deleted = 0), 0) AS replaced \
         FROM users u JOIN folders f ON f.owner_id = u.id AND f.name = $2 WHERE u.id = $1",
    )
    .bind(user_id)
    .bind(folder)
    .bind(path)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|row| {
        Ok(UploadBudget {
            folder_id: row.try_get("folder_id")?,
            used: row.try_get("used_bytes")?,
            quota: row.try_get("quota_bytes")?,
            pending: row.try_get("pending_bytes")?,
            replaced: row.try_get("replaced")?,
        })
    })
    .transpose()
}

/// A user row.
#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub password_hash: String,
}

/// Creates a user and their `default` folder in one transaction.
///
/// # Errors
/// [`DbError::Conflict`] when the username or email is taken.
pub async fn create_user(
    db: &Db,
    username: &str,
    email: &str,
    password_hash: &str,
    quota: i64,
    empty_root: &str,
    now: i64,
) -> DbResult<i64> {
    let mut tx = db.pool.begin().await?;
    let id: i64 = sqlx::query(
        "INSERT INTO users (username, email, password_hash, quota_bytes, used_bytes, created_at) \
         VALUES ($1, $2, $3, $4, 0, $5) RETURNING id",
    )
    .bind(username)
    .bind(email)
    .bind(password_hash)
    .bind(quota)
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(map_unique)?
    .try_get("id")?;
    sqlx::query(
        "INSERT INTO folders (owner_id, name, head_seq, head_root, created_at, uid) \
         VALUES ($1, 'default', 0, $2, $3, $4)",
    )
    .bind(id)
    .bind(empty_root)
    .bind(now)
    .bind(new_folder_uid()?)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Finds a user by login name.
///
/// # Errors
/// SQL errors.
pub async fn user_by_name(db: &Db, username: &str) -> DbResult<Option<UserRow>> {
    Ok(
        sqlx::query_as("SELECT id, username, email, password_hash FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&db.pool)
            .await?,
    )
}

/// A refresh token row.
#[derive(Debug, Clone, FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub family: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Stores a new refresh token (hashed).
///
/// # Errors
/// SQL errors.
pub async fn insert_refresh(
    db: &Db,
    user_id: i64,
    family: &str,
    token_hash: &str,
    now: i64,
    expires_at: i64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (user_id, family, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(user_id)
    .bind(family)
    .bind(token_hash)
    .bind(now)
    .bind(expires_at)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Finds a refresh token by its hash.
///
/// # Errors
/// SQL errors.
pub async fn refresh_by_hash(db: &Db, token_hash: &str) -> DbResult<Option<TokenRow>> {
    Ok(sqlx::query_as(
        "SELECT id, user_id, family, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(&db.pool)
    .await?)
}

/// Marks a token used, only if it still is unused and unrevoked; false when a concurrent
/// request used it first (which the caller treats as reuse).
///
/// # Errors
/// SQL errors.
pub async fn mark_refresh_used(db: &Db, id: i64, now: i64) -> DbResult<bool> {
    let done = sqlx::query(
        "UPDATE refresh_tokens SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes every token of a family; returns how many were still live.
///
/// # Errors
/// SQL errors.
pub async fn revoke_family(db: &Db, family: &str, now: i64) -> DbResult<u64> {
    let done = sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(family)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected())
}

/// A folder's id and head.
#[derive(Debug, Clone, FromRow)]
pub struct FolderRow {
    pub id: i64,
    pub name: String,
    pub head_seq: i64,
    pub head_root: String,
}

/// The user's folder called `name`.
///
/// # Errors
/// SQL errors.
pub async fn folder(db: &Db, owner_id: i64, name: &str) -> DbResult<Option<FolderRow>> {
    Ok(sqlx::query_as(
        "SELECT id, name, head_seq, head_root FROM folders WHERE owner_id = $1 AND name = $2",
    )
    .bind(owner_id)
    .bind(name)
    .fetch_optional(&db.pool)
    .await?)
}

/// A folder with its head's totals.
#[derive(Debug, Clone, FromRow)]
pub struct FolderSummaryRow {
    pub name: String,
    pub uid: String,
    pub head_seq: i64,
    pub head_root: String,
    pub created_at: i64,
    pub files: i64,
    pub bytes: i64,
}

/// The user's folders by name, with the totals of each head.
///
/// # Errors
/// SQL errors.
pub async fn folders(db: &Db, owner_id: i64) -> DbResult<Vec<FolderSummaryRow>> {
    Ok(sqlx::query_as(
        "SELECT f.name, f.uid, f.head_seq, f.head_root, f.created_at, \
         COALESCE(c.files, 0) AS files, COALESCE(c.bytes, 0) AS bytes \
         FROM folders f LEFT JOIN commits c ON c.folder_id = f.id AND c.seq = f.head_seq \
         WHERE f.owner_id = $1 ORDER BY f.name",
    )
    .bind(owner_id)
    .fetch_all(&db.pool)
    .await?)
}

/// Creates an empty folder; returns its identity.
///
/// # Errors
/// [`DbError::Conflict`] when the user has a folder of that name.
pub async fn create_folder(
    db: &Db,
    owner_id: i64,
    name: &str,
    empty_root: &str,
    now: i64,
) -> DbResult<String> {
    let uid = new_folder_uid()?;
    sqlx::query(
        "INSERT INTO folders (owner_id, name, head_seq, head_root, created_at, uid) \
         VALUES ($1, $2, 0, $3, $4, $5)",
    )
    .bind(owner_id)
    .bind(name)
    .bind(empty_root)
    .bind(now)
    .bind(&uid)
    .execute(&db.pool)
    .await
    .map_err(map_unique)?;
    Ok(uid)
}

/// One commit of a folder.
#[derive(Debug, Clone, FromRow)]
pub struct CommitRow {
    pub seq: i64,
    pub root: String,
    pub parent_seq: i64,
    pub device: String,
    pub created_at: i64,
    pub files: i64,
    pub bytes: i64,
}

/// A folder's commits older than `before`, newest first, at most `limit`.
///
/// # Errors
/// SQL errors.
pub async fn commits(db: &Db, folder_id: i64, before: i64, limit: i64) -> DbResult<Vec<CommitRow>> {
    Ok(sqlx::query_as(
        "SELECT seq, root, parent_seq, device, created_at, files, bytes FROM commits \
         WHERE folder_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
    )
    .bind(folder_id)
    .bind(before)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

/// A file row of the REST index.
#[derive(Debug, Clone, FromRow)]
pub struct FileRow {
    pub id: i64,
    pub folder_id: i64,
    pub path: String,
    pub version: i64,
    pub size: i64,
    pub hash: String,
    pub modified_at: i64,
    pub deleted: i64,
}

/// Which files [`list_files`] lists.
#[derive(Debug, Clone)]
pub enum ListFilter {
    /// Every live file.
    All,
    /// Live files at this path or under it as a directory.
    Under(String),
    /// This path, live or deleted.
    Exact(String),
}

/// Files of a folder after `after` in path order, at most `limit`.
///
/// # Errors
/// SQL errors.
pub async fn list_files(
    db: &Db,
    folder_id: i64,
    after: &str,
    filter: &ListFilter,
    limit: i64,
) -> DbResult<Vec<FileRow>> {
    const COLUMNS: &str = "SELECT f.id, f.folder_id, f.path, f.version, f.size, f.hash, f.modified_at, f.deleted FROM files f";
    let query = match filter {
        ListFilter::All => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{COLUMNS} WHERE f.folder_id = $1 AND f.deleted = 0 AND f.path > $2 ORDER BY f.path LIMIT $3"
        )))
        .bind(folder_id)
        .bind(after)
        .bind(limit),
        ListFilter::Exact(path) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{COLUMNS} WHERE f.folder_id = $1 AND f.path > $2 AND f.path = $3 ORDER BY f.path LIMIT $4"
        )))
        .bind(folder_id)
        .bind(after)
        .bind(path.clone())
        .bind(limit),
        ListFilter::Under(dir) => {
            // substr counts characters in both SQLite and PostgreSQL.
            let under = format!("{dir}/");
            // An int4: PostgreSQL has no substr(text, int, bigint).
            let chars = i32::try_from(under.chars().count()).unwrap_or(i32::MAX);
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{COLUMNS} WHERE f.folder_id = $1 AND f.deleted = 0 AND f.path > $2 \
                 AND (f.path = $3 OR substr(f.path, 1, $4) = $5) ORDER BY f.path LIMIT $6"
            )))
            .bind(folder_id)
            .bind(after)
            .bind(dir.clone())
            .bind(chars)
            .bind(under)
            .bind(limit)
        }
    };
    Ok(query.fetch_all(&db.pool).await?)
}

/// A file by id, only if it is in a folder the user owns (object-level authorization).
///
/// # Errors
/// SQL errors.
pub async fn file_for_owner(db: &Db, owner_id: i64, file_id: i64) -> DbResult<Option<FileRow>> {
    Ok(sqlx::query_as(
        "SELECT f.id, f.folder_id, f.path, f.version, f.size, f.hash, f.modified_at, f.deleted FROM files f \
         JOIN folders d ON d.id = f.folder_id WHERE f.id = $1 AND d.owner_id = $2",
    )
    .bind(file_id)
    .bind(owner_id)
    .fetch_optional(&db.pool)
    .await?)
}

/// One version of a file.
#[derive(Debug, Clone, FromRow)]
pub struct VersionRow {
    pub version: i64,
    pub seq: i64,
    pub size: i64,
    pub hash: String,
    pub deleted: i64,
    pub device: String,
    pub created_at: i64,
}

/// Every version of a file, newest first.
///
/// # Errors
/// SQL errors.
pub async fn versions(db: &Db, file_id: i64) -> DbResult<Vec<VersionRow>> {
    Ok(sqlx::query_as(
        "SELECT version, seq, size, hash, deleted, device, created_at FROM file_versions \
         WHERE file_id = $1 ORDER BY version DESC",
    )
    .bind(file_id)
    .fetch_all(&db.pool)
    .await?)
}

/// The device that committed the current version of `path` in folder `folder_id`, if the
/// folder has such a file row.
///
/// # Errors
/// SQL errors.
pub async fn current_device(db: &Db, folder_id: i64, path: &str) -> DbResult<Option<String>> {
    let row = sqlx::query(
        "SELECT v.device FROM files f JOIN file_versions v          ON v.file_id = f.id AND v.version = f.version          WHERE f.folder_id = $1 AND f.path = $2",
    )
    .bind(folder_id)
    .bind(path)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| r.try_get::<String, _>("device"))
        .transpose()
        .map_err(DbError::from)
}

/// One version of a file.
///
/// # Errors
/// SQL errors.
pub async fn version(db: &Db, file_id: i64, version: i64) -> DbResult<Option<VersionRow>> {
    Ok(sqlx::query_as(
        "SELECT version, seq, size, hash, deleted, device, created_at FROM file_versions \
         WHERE file_id = $1 AND version = $2",
    )
    .bind(file_id)
    .bind(version)
    .fetch_optional(&db.pool)
    .await?)
}

/// A change for `/sync/changes`.
#[derive(Debug, Clone, FromRow)]
pub struct ChangeRow {
    pub seq: i64,
    pub id: i64,
    pub path: String,
    pub version: i64,
    pub deleted: i64,
    pub size: i64,
    pub hash: String,
}

/// Changes of a folder with `seq > since`, oldest first, at most `limit`.
///
/// # Errors
/// SQL errors.
pub async fn changes(db: &Db, folder_id: i64, since: i64, limit: i64) -> DbResult<Vec<ChangeRow>> {
    Ok(sqlx::query_as(
        "SELECT v.seq, f.id, f.path, v.version, v.deleted, v.size, v.hash FROM file_versions v \
         JOIN files f ON f.id = v.file_id WHERE v.folder_id = $1 AND v.seq > $2 \
         ORDER BY v.seq, f.path LIMIT $3",
    )
    .bind(folder_id)
    .bind(since)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

/// Records a heartbeat.
///
/// # Errors
/// SQL errors.
pub async fn heartbeat(
    db: &Db,
    user_id: i64,
    client_id: &str,
    status: &str,
    now: i64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO clients (user_id, client_id, status, last_seen) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, client_id) DO UPDATE SET status = excluded.status, last_seen = excluded.last_seen",
    )
    .bind(user_id)
    .bind(client_id)
    .bind(status)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// One audit record: who did what, from where, with what result. Never a secret or content.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    pub at: i64,
    pub user_id: Option<i64>,
    pub actor: &'a str,
    pub ip: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub result: &'a str,
}

/// Appends to the audit log.
///
/// # Errors
/// SQL errors.
pub async fn audit(db: &Db, record: &AuditRecord<'_>) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, user_id, actor, ip, action, target, result) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(record.at)
    .bind(record.user_id)
    .bind(record.actor)
    .bind(record.ip)
    .bind(record.action)
    .bind(record.target)
    .bind(record.result)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// One path changed by a commit.
#[derive(Debug, Clone)]
pub struct CommitChange<'a> {
    pub path: &'a str,
    /// Size and node id of the new version; `None` for a delete.
    pub content: Option<(i64, &'a str)>,
    pub device: &'a str,
    /// +1 when the path gains a live file, -1 when it loses one, else 0.
    pub files_delta: i64,
}

/// What one commit changes: the head, and the REST index for each changed path.
#[derive(Debug, Clone)]
pub struct CommitRecord<'a> {
    pub folder_id: i64,
    pub owner_id: i64,
    pub base_seq: i64,
    pub new_root: &'a str,
    pub device: &'a str,
    pub now: i64,
    pub changes: &'a [CommitChange<'a>],
    /// Change in the owner's used bytes.
    pub usage_delta: i64,
    /// Nodes and blocks the new tree references that the folder had not committed before
    /// (hex ids); recorded as readable by the folder.
    pub objects: &'a [String],
}

/// The outcome of [`commit`].
#[derive(Debug, Clone)]
pub enum CommitOutcome {
    /// Committed as `seq`; the file rows after the changes, in order.
    Done { seq: i64, files: Vec<FileRow> },
    /// The head moved since `base_seq`: re-read it and try again.
    Stale,
    /// The owner's quota does not admit the change.
    OverQuota,
}

/// Commits changes: compare-and-swap on the folder head, the commit row, the file index and the
/// quota, all in one transaction. The commit's file and byte totals are the previous commit's
/// plus the deltas, so a commit costs the same in a folder of ten files or a million.
///
/// # Errors
/// SQL errors.
pub async fn commit(db: &Db, record: &CommitRecord<'_>) -> DbResult<CommitOutcome> {
    let mut tx = db.pool.begin().await?;
    let seq = record.base_seq + 1;
    let swapped = sqlx::query(
        "UPDATE folders SET head_seq = $1, head_root = $2 WHERE id = $3 AND head_seq = $4",
    )
    .bind(seq)
    .bind(record.new_root)
    .bind(record.folder_id)
    .bind(record.base_seq)
    .execute(&mut *tx)
    .await?;
    if swapped.rows_affected() != 1 {
        return Ok(CommitOutcome::Stale);
    }
    if !adjust_usage(&mut tx, record.owner_id, record.usage_delta).await? {
        return Ok(CommitOutcome::OverQuota);
    }
    let mut files = Vec::with_capacity(record.changes.len());
    let files_delta: i64 = record.changes.iter().map(|c| c.files_delta).sum();
    // Multi-row statements, in chunks with no path twice (one statement may not upsert a row
    // twice), in order: a commit of 20,000 files is ~600 statements, not 40,000.
    let mut start = 0;
    while start < record.changes.len() {
        let mut seen = HashSet::new();
        let mut end = start;
        while end < record.changes.len()
            && end - start < CHANGE_BATCH_LEN
            && seen.insert(record.changes[end].path)
        {
            end += 1;
        }
        let chunk = &record.changes[start..end];
        files.extend(upsert_files(&mut tx, record, chunk, seq).await?);
        start = end;
    }
    let previous =
        sqlx::query("SELECT files, bytes FROM commits WHERE folder_id = $1 AND seq = $2")
            .bind(record.folder_id)
            .bind(record.base_seq)
            .fetch_optional(&mut *tx)
            .await?;
    let (prev_files, prev_bytes): (i64, i64) = match previous {
        Some(row) => (row.try_get("files")?, row.try_get("bytes")?),
        None => (0, 0),
    };
    sqlx::query(
        "INSERT INTO commits (folder_id, seq, root, parent_seq, device, created_at, files, bytes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(record.folder_id)
    .bind(seq)
    .bind(record.new_root)
    .bind(record.base_seq)
    .bind(record.device)
    .bind(record.now)
    .bind(prev_files + files_delta)
    .bind(prev_bytes + record.usage_delta)
    .execute(&mut *tx)
    .await?;
    let released = add_committed(&mut tx, record.folder_id, record.objects, record.now).await?;
    if released != 0 {
        add_pending(&mut tx, record.owner_id, -released).await?;
    }
    tx.commit().await?;
    Ok(CommitOutcome::Done { seq, files })
}

/// Rows per multi-row statement of [`commit`] (4 and 6 parameters a row; small for the reason
/// given at [`OBJECT_BATCH_LEN`]).
const CHANGE_BATCH_LEN: usize = 64;

/// Upserts the file rows of `chunk` (distinct paths) and inserts their versions; returns the
/// rows in the chunk's order.
async fn upsert_files(
    conn: &mut AnyConnection,
    record: &CommitRecord<'_>,
    chunk: &[CommitChange<'_>],
    seq: i64,
) -> DbResult<Vec<FileRow>> {
    // $1 folder, $2 now; then path, size, hash, deleted per row.
    let rows: Vec<String> = (0..chunk.len())
        .map(|i| {
            let p = 3 + 4 * i;
            format!("($1, ${p}, 1, ${}, ${}, $2, ${})", p + 1, p + 2, p + 3)
        })
        .collect();
    let sql = format!(
        "INSERT INTO files (folder_id, path, version, size, hash, modified_at, deleted) VALUES {} \
         ON CONFLICT (folder_id, path) DO UPDATE SET version = files.version + 1, size = excluded.size, \
         hash = excluded.hash, modified_at = excluded.modified_at, deleted = excluded.deleted \
         RETURNING id, folder_id, path, version, size, hash, modified_at, deleted",
        rows.join(", ")
    );
    // Only placeholders are formatted in; every value is bound.
    let mut query = sqlx::query_as::<_, FileRow>(sqlx::AssertSqlSafe(sql))
        .bind(record.folder_id)
        .bind(record.now);
    for change in chunk {
        let (size, hash, deleted) = match change.content {
            Some((size, hash)) => (size, hash, 0i64),
            None => (0, "", 1),
        };
        query = query.bind(change.path).bind(size).bind(hash).bind(deleted);
    }
    let returned = query.fetch_all(&mut *conn).await?;
    let mut by_path: HashMap<String, FileRow> =
        returned.into_iter().map(|r| (r.path.clone(), r)).collect();
    let mut files = Vec::with_capacity(chunk.len());
    for change in chunk {
        files.push(by_path.remove(change.path).ok_or_else(|| {
            DbError::Sql(sqlx::Error::Protocol(format!(
                "the upsert of '{}' returned no row",
                change.path
            )))
        })?);
    }
    // $1 folder, $2 seq, $3 now; then file, version, size, hash, deleted, device per row.
    let rows: Vec<String> = (0..chunk.len())
        .map(|i| {
            let p = 4 + 6 * i;
            format!(
                "(${p}, ${}, $1, $2, ${}, ${}, ${}, ${}, $3)",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO file_versions (file_id, version, folder_id, seq, size, hash, deleted, device, created_at) VALUES {}",
        rows.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(record.folder_id)
        .bind(seq)
        .bind(record.now);
    for (change, file) in chunk.iter().zip(&files) {
        query = query
            .bind(file.id)
            .bind(file.version)
            .bind(file.size)
            .bind(file.hash.as_str())
            .bind(file.deleted)
            .bind(change.device);
    }
    query.execute(&mut *conn).await?;
    Ok(files)
}

async fn adjust_usage(conn: &mut AnyConnection, user_id: i64, delta: i64) -> DbResult<bool> {
    let done = sqlx::query(
        "UPDATE users SET used_bytes = used_bytes + $1 WHERE id = $2 AND used_bytes + $1 <= quota_bytes",
    )
    .bind(delta)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1 || delta <= 0 && force_usage(conn, user_id, delta).await?)
}

/// A change that frees space always passes, even over quota (after a quota was lowered).
async fn force_usage(conn: &mut AnyConnection, user_id: i64, delta: i64) -> DbResult<bool> {
    sqlx::query("UPDATE users SET used_bytes = used_bytes + $1 WHERE id = $2")
        .bind(delta)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// The name of the folder with id `folder_id`.
///
/// # Errors
/// SQL errors.
pub async fn folder_name(db: &Db, folder_id: i64) -> DbResult<Option<String>> {
    let row = sqlx::query("SELECT name FROM folders WHERE id = $1")
        .bind(folder_id)
        .fetch_optional(&db.pool)
        .await?;
    row.map(|r| r.try_get::<String, _>("name").map_err(DbError::from))
        .transpose()
}

/// Every folder's head root, for `cairn-server check`.
///
/// # Errors
/// SQL errors.
pub async fn all_roots(db: &Db) -> DbResult<Vec<String>> {
    let rows = sqlx::query("SELECT root FROM commits UNION SELECT head_root AS root FROM folders")
        .fetch_all(&db.pool)
        .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("root").map_err(DbError::from))
        .collect()
}

/// The file (or symlink) node of every version in the history (deletions have none): a conflict's
/// losing version kept in the history (`commit_root`'s `kept`) is in no commit's tree, so the
/// collector and `cairn-server check` start from these as well as from [`all_roots`].
///
/// # Errors
/// SQL errors.
pub async fn version_nodes(db: &Db) -> DbResult<Vec<String>> {
    let rows = sqlx::query("SELECT DISTINCT hash FROM file_versions WHERE deleted = 0")
        .fetch_all(&db.pool)
        .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("hash").map_err(DbError::from))
        .collect()
}

/// Finds a user by id.
///
/// # Errors
/// SQL errors.
pub async fn user_by_id(db: &Db, id: i64) -> DbResult<Option<UserRow>> {
    Ok(
        sqlx::query_as("SELECT id, username, email, password_hash FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

/// Whether a file id exists at all (to tell an authorization failure from a typo in the audit).
///
/// # Errors
/// SQL errors.
pub async fn file_exists(db: &Db, file_id: i64) -> DbResult<bool> {
    Ok(sqlx::query("SELECT id FROM files WHERE id = $1")
        .bind(file_id)
        .fetch_optional(&db.pool)
        .await?
        .is_some())
}

/// Deletes file versions and commits created before `cutoff` (Unix ms), keeping each file's
/// current version and each folder's head commit; returns (versions, commits) deleted.
///
/// # Errors
/// SQL errors.
pub async fn prune(db: &Db, cutoff: i64) -> DbResult<(u64, u64)> {
    let mut tx = db.pool.begin().await?;
    let versions = sqlx::query(
        "DELETE FROM file_versions WHERE created_at < $1 \
         AND version < (SELECT f.version FROM files f WHERE f.id = file_versions.file_id)",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let commits = sqlx::query(
        "DELETE FROM commits WHERE created_at < $1 \
         AND seq < (SELECT d.head_seq FROM folders d WHERE d.id = commits.folder_id)",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok((versions, commits))
}

/// Rows per multi-row statement over `folder_objects` (well under both engines' parameter limits).
///
/// Kept small: sqlx looks up every parameter's name, which SQLite finds by a linear scan, so a
/// statement's binding cost grows with the square of its parameters (measured: 8% of a server's
/// CPU time in a 20,000-file upload at 500 rows a statement).
const OBJECT_BATCH_LEN: usize = 128;

/// `folder_objects.committed` values (0: uploaded by a client of the folder, not committed
/// yet; such rows expire). Committed by the folder: the object's whole subtree was verified,
/// and a commit's walk stops at it.
const COMMITTED: i64 = 1;
/// Committed once, then collected and stored again by an upload: readable by the folder and
/// never expired, but its subtree is not vouched for (the upload may have sent the node
/// alone), so a commit's walk descends into it again, and upgrades it to [`COMMITTED`].
const RESTORED: i64 = 2;

/// Which of `ids` (hex) the folder knows, and whether each was committed with its subtree
/// verified (`true`) or only uploaded, or stored again since (`false`).
///
/// # Errors
/// SQL errors.
pub async fn objects_state(
    db: &Db,
    folder_id: i64,
    ids: &[String],
) -> DbResult<std::collections::HashMap<String, bool>> {
    Ok(objects_with_sizes(db, folder_id, ids)
        .await?
        .into_iter()
        .map(|(id, object)| (id, object.verified))
        .collect())
}

/// What the folder's row says of an object (see [`objects_with_sizes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderObject {
    /// Committed with its subtree verified (as [`objects_state`]).
    pub verified: bool,
    /// The size its upload had, while uploaded and not committed yet: the server measured it,
    /// so a commit's file nodes must give a block the same length.
    pub uploaded_size: Option<i64>,
}

/// [`objects_state`], with the sizes of uploads not committed yet, in the same statements.
///
/// # Errors
/// SQL errors.
pub async fn objects_with_sizes(
    db: &Db,
    folder_id: i64,
    ids: &[String],
) -> DbResult<std::collections::HashMap<String, FolderObject>> {
    let mut known = std::collections::HashMap::with_capacity(ids.len());
    for batch in ids.chunks(OBJECT_BATCH_LEN) {
        let placeholders: Vec<String> = (0..batch.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT id, committed, size FROM folder_objects WHERE folder_id = $1 AND id IN ({})",
            placeholders.join(", ")
        );
        // Only placeholders are formatted in; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(folder_id);
        for id in batch {
            query = query.bind(id.as_str());
        }
        for row in query.fetch_all(&db.pool).await? {
            let id: String = row.try_get("id")?;
            let committed: i64 = row.try_get("committed")?;
            let size: i64 = row.try_get("size")?;
            known.insert(
                id,
                FolderObject {
                    verified: committed == COMMITTED,
                    // 0: not measured (a row from before migration 0004), or an empty block.
                    uploaded_size: (committed == 0 && size > 0).then_some(size),
                },
            );
        }
    }
    Ok(known)
}

/// Records `ids` (hex) as committed by the folder (readable, and no longer pending): rows the
/// folder had only uploaded are upgraded. Returns the bytes those uploads had been charged,
/// which the caller takes off the owner's pending bytes in the same transaction.
///
/// # Errors
/// SQL errors.
async fn add_committed(
    conn: &mut AnyConnection,
    folder_id: i64,
    ids: &[String],
    now: i64,
) -> DbResult<i64> {
    let mut released = 0;
    for batch in ids.chunks(OBJECT_BATCH_LEN) {
        let rows: Vec<String> = (0..batch.len())
            .map(|i| format!("($1, ${}, 1, $2)", i + 3))
            .collect();
        // A fresh row is inserted with size 0 and returns 0; an upgraded upload returns the
        // size it was charged; a row already committed is not touched and returns nothing.
        let sql = format!(
            "INSERT INTO folder_objects (folder_id, id, committed, created_at) VALUES {} \
             ON CONFLICT (folder_id, id) DO UPDATE SET committed = 1 \
             WHERE folder_objects.committed <> 1 RETURNING size",
            rows.join(", ")
        );
        // Only placeholders are formatted in; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(folder_id)
            .bind(now);
        for id in batch {
            query = query.bind(id.as_str());
        }
        for row in query.fetch_all(&mut *conn).await? {
            released += row.try_get::<i64, _>("size")?;
        }
    }
    Ok(released)
}

/// A user's bytes uploaded but not yet committed, and their quota.
///
/// # Errors
/// SQL errors.
pub async fn pending_uploads(db: &Db, user_id: i64) -> DbResult<(i64, i64)> {
    let row = sqlx::query("SELECT pending_bytes, quota_bytes FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(&db.pool)
        .await?;
    Ok((row.try_get("pending_bytes")?, row.try_get("quota_bytes")?))
}

/// Records `objects` (hex id, bytes) as uploaded to the folder (readable by it) and charges the
/// rows it adds to the owner's pending bytes, in one transaction. Returns the bytes charged: an
/// object the folder already had costs nothing. A committed row (of any folder) stays
/// committed, unless its object is among `anew` (the store did not have it: it was collected
/// since its commit): then it is marked [`RESTORED`], so the next commit naming it checks its
/// subtree again instead of trusting a node that may have come back alone.
///
/// # Errors
/// SQL errors.
pub async fn add_uploaded(
    db: &Db,
    owner_id: i64,
    folder_id: i64,
    objects: &[(String, i64)],
    anew: &[&str],
    now: i64,
) -> DbResult<i64> {
    let mut tx = db.pool.begin().await?;
    // The owner's row first, as a commit locks it (for the quota) before the folder's objects:
    // the same order in both, so two transactions on PostgreSQL cannot deadlock (other
    // folders' rows, which a restore below may update, are taken in an order of their own).
    // Everything is charged up front; what the folder already had is given back below.
    let offered: i64 = objects.iter().map(|(_, size)| *size).sum();
    add_pending(&mut tx, owner_id, offered).await?;
    let mut charged = 0;
    // Two parameters a row: half the rows of a statement, for the binding cost.
    for batch in objects.chunks(OBJECT_BATCH_LEN / 2) {
        let rows: Vec<String> = (0..batch.len())
            .map(|i| format!("($1, ${}, 0, $2, ${})", 3 + 2 * i, 4 + 2 * i))
            .collect();
        let sql = format!(
            "INSERT INTO folder_objects (folder_id, id, committed, created_at, size) VALUES {} \
             ON CONFLICT (folder_id, id) DO NOTHING RETURNING id, size",
            rows.join(", ")
        );
        // Only placeholders are formatted in; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(folder_id)
            .bind(now);
        for (id, size) in batch {
            query = query.bind(id.as_str()).bind(*size);
        }
        for row in query.fetch_all(&mut *tx).await? {
            charged += row.try_get::<i64, _>("size")?;
        }
    }
    if charged != offered {
        add_pending(&mut tx, owner_id, charged - offered).await?;
    }
    // New to the store: collected since any folder that committed it did so. Every folder's
    // committed row of it is marked, not only this folder's: another folder's commit would
    // otherwise stop at a node that came back without its subtree (this upload may have stopped
    // before it). Such rows are rare (`folder_objects_id` finds them without locking); the few
    // found are updated in (folder, id) order, so two uploads restoring the same objects take
    // their row locks in the same order.
    let mut restored: Vec<(i64, String)> = Vec::new();
    for batch in anew.chunks(OBJECT_BATCH_LEN) {
        let placeholders: Vec<String> = (0..batch.len()).map(|i| format!("${}", i + 1)).collect();
        let sql = format!(
            "SELECT folder_id, id FROM folder_objects WHERE committed = {COMMITTED} AND id IN ({})",
            placeholders.join(", ")
        );
        // Only constants and placeholders are formatted in; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in batch {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut *tx).await? {
            restored.push((row.try_get("folder_id")?, row.try_get("id")?));
        }
    }
    restored.sort();
    for (folder, id) in &restored {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE folder_objects SET committed = {RESTORED}, size = 0 \
             WHERE folder_id = $1 AND id = $2 AND committed = {COMMITTED}"
        )))
        .bind(folder)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(charged)
}

/// Marks every committed row [`RESTORED`]: after the block store's index was rebuilt from its
/// packs, a stored node may be one the collector had deleted whose pack outlived its
/// children's, so no stored node vouches for its subtree until a commit has walked it again.
/// Returns the rows marked.
///
/// # Errors
/// SQL errors.
pub async fn distrust_committed(db: &Db) -> DbResult<u64> {
    // Only constants are formatted in.
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE folder_objects SET committed = {RESTORED}, size = 0 WHERE committed = {COMMITTED}"
    )))
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected())
}

async fn add_pending(conn: &mut AnyConnection, user_id: i64, delta: i64) -> DbResult<()> {
    sqlx::query("UPDATE users SET pending_bytes = pending_bytes + $1 WHERE id = $2")
        .bind(delta)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Marks the folder's uploaded (uncommitted) rows among `ids` as uploaded `now`: a client told
/// that the folder has them may take until the grace period's end to commit them, as it may for
/// blocks it just uploaded.
///
/// # Errors
/// SQL errors.
pub async fn refresh_uploaded(db: &Db, folder_id: i64, ids: &[String], now: i64) -> DbResult<()> {
    for batch in ids.chunks(OBJECT_BATCH_LEN) {
        let placeholders: Vec<String> = (0..batch.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "UPDATE folder_objects SET created_at = $2 \
             WHERE folder_id = $1 AND committed = 0 AND id IN ({})",
            placeholders.join(", ")
        );
        // Only placeholders are formatted in; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(folder_id)
            .bind(now);
        for id in batch {
            query = query.bind(id.as_str());
        }
        query.execute(&db.pool).await?;
    }
    Ok(())
}

/// Forgets uploads that no commit took up before `cutoff` (Unix ms) and gives their bytes back
/// to their owners' pending bytes, in one transaction; returns (rows, bytes) released. Their
/// blocks are the garbage collector's: unreferenced and as old, they are deleted.
///
/// # Errors
/// SQL errors.
pub async fn expire_uploads(db: &Db, cutoff: i64) -> DbResult<(u64, i64)> {
    let mut tx = db.pool.begin().await?;
    // The owners' rows first, in the order a commit locks rows (see `add_uploaded`).
    sqlx::query(
        "UPDATE users SET pending_bytes = pending_bytes WHERE id IN (SELECT f.owner_id \
         FROM folders f JOIN folder_objects o ON o.folder_id = f.id \
         WHERE o.committed = 0 AND o.created_at < $1)",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?;
    // Deleted first and summed from what was deleted: a commit taking a row up meanwhile either
    // upgraded it before (not deleted here) or finds it gone (and releases nothing).
    let rows = sqlx::query(
        "DELETE FROM folder_objects WHERE committed = 0 AND created_at < $1 RETURNING folder_id, size",
    )
    .bind(cutoff)
    .fetch_all(&mut *tx)
    .await?;
    let mut per_folder: HashMap<i64, i64> = HashMap::new();
    for row in &rows {
        *per_folder.entry(row.try_get("folder_id")?).or_default() +=
            row.try_get::<i64, _>("size")?;
    }
    let mut bytes = 0;
    for (folder_id, size) in per_folder {
        bytes += size;
        if size != 0 {
            sqlx::query(
                "UPDATE users SET pending_bytes = pending_bytes - $1 \
                 WHERE id = (SELECT owner_id FROM folders WHERE id = $2)",
            )
            .bind(size)
            .bind(folder_id)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok((rows.len() as u64, bytes))
}

/// Claims this round of the periodic job `kind`: true when it was due at `now` and this caller
/// moved its next run to `next_at`; false when it is not due or another instance moved it
/// first. The first call for a kind only schedules it at `next_at`.
///
/// # Errors
/// SQL errors.
pub async fn claim_job(db: &Db, kind: &str, now: i64, next_at: i64) -> DbResult<bool> {
    let inserted = sqlx::query(
        "INSERT INTO job_schedule (kind, next_at) VALUES ($1, $2) ON CONFLICT (kind) DO NOTHING",
    )
    .bind(kind)
    .bind(next_at)
    .execute(&db.pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(false);
    }
    let moved =
        sqlx::query("UPDATE job_schedule SET next_at = $3 WHERE kind = $1 AND next_at <= $2")
            .bind(kind)
            .bind(now)
            .bind(next_at)
            .execute(&db.pool)
            .await?
            .rows_affected();
    Ok(moved == 1)
}

/// When the periodic job `kind` is next due (ms since the epoch); `None` before its first claim.
///
/// # Errors
/// SQL errors.
pub async fn job_next_at(db: &Db, kind: &str) -> DbResult<Option<i64>> {
    let row = sqlx::query("SELECT next_at FROM job_schedule WHERE kind = $1")
        .bind(kind)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.map(|row| row.try_get("next_at")).transpose()?)
}

/// Makes the periodic job `kind` due at `at` again (its submission failed).
///
/// # Errors
/// SQL errors.
pub async fn reschedule_job(db: &Db, kind: &str, at: i64) -> DbResult<()> {
    sqlx::query("UPDATE job_schedule SET next_at = $2 WHERE kind = $1")
        .bind(kind)
        .bind(at)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// A job's progress mark; 0 when it has none yet.
///
/// # Errors
/// SQL errors.
pub async fn job_mark(db: &Db, name: &str) -> DbResult<i64> {
    let row = sqlx::query("SELECT value FROM job_marks WHERE name = $1")
        .bind(name)
        .fetch_optional(&db.pool)
        .await?;
    Ok(match row {
        Some(row) => row.try_get("value")?,
        None => 0,
    })
}

/// Moves a job's progress mark from `from` to `to`; false when it was not at `from` (another
/// run moved it first).
///
/// # Errors
/// SQL errors.
pub async fn advance_job_mark(db: &Db, name: &str, from: i64, to: i64) -> DbResult<bool> {
    let moved = if from == 0 {
        sqlx::query(
            "INSERT INTO job_marks (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = $2 WHERE job_marks.value = 0",
        )
        .bind(name)
        .bind(to)
        .execute(&db.pool)
        .await?
    } else {
        sqlx::query("UPDATE job_marks SET value = $3 WHERE name = $1 AND value = $2")
            .bind(name)
            .bind(from)
            .bind(to)
            .execute(&db.pool)
            .await?
    };
    Ok(moved.rows_affected() == 1)
}

/// One audit-log row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub user_id: Option<i64>,
    pub actor: String,
    pub ip: String,
    pub action: String,
    pub target: String,
    pub result: String,
}

/// Audit rows with an id above `after`, in id order, at most `limit`, cut at the first row
/// written at or after `before_at`: a young row holds back the rows after it, so a row whose
/// insert commits late (with a lower id) is never skipped.
///
/// # Errors
/// SQL errors.
pub async fn audit_after(
    db: &Db,
    after: i64,
    before_at: i64,
    limit: i64,
) -> DbResult<Vec<AuditRow>> {
    let rows = sqlx::query(
        "SELECT id, at, user_id, actor, ip, action, target, result FROM audit_log \
         WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map_while(|row| match row.try_get::<i64, _>("at") {
            Ok(at) if at >= before_at => None,
            _ => Some(row),
        })
        .map(|row| {
            Ok(AuditRow {
                id: row.try_get("id")?,
                at: row.try_get("at")?,
                user_id: row.try_get("user_id")?,
                actor: row.try_get("actor")?,
                ip: row.try_get("ip")?,
                action: row.try_get("action")?,
                target: row.try_get("target")?,
                result: row.try_get("result")?,
            })
        })
        .collect()
}
